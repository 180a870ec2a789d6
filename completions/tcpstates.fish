complete -c tcpstates -s L -l localport -d 'Only sockets with one of these local ports (comma-separated)' -r
complete -c tcpstates -s D -l remoteport -d 'Only sockets with one of these remote ports (comma-separated)' -r
complete -c tcpstates -s p -l pid -d 'Only sockets owned by this process ID' -r
complete -c tcpstates -s c -l comm -d 'Only sockets owned by a process with this command name (exact; the kernel keeps 15 bytes)' -r
complete -c tcpstates -l cgroup -d 'Only sockets in this cgroup (v2) or below it: a path, absolute or under the cgroup2 mount' -r -F
complete -c tcpstates -l service -d 'Only sockets of this service: a systemd unit (nginx.service), a container (at least 4 hex digits of its id) or a Kubernetes pod (its UID); with all of its cgroup\'s children' -r
complete -c tcpstates -l netns -d 'Only this network namespace: a name under /run/netns, a path such as /proc/PID/ns/net, or an inode number' -r
complete -c tcpstates -l state -d 'Only transitions into or out of these states (comma-separated, e.g. SYN_SENT,CLOSE_WAIT)' -r
complete -c tcpstates -s o -l output -d 'Output format' -r -f -a "text\t'Aligned columns, as BCC\'s tcpstates prints them'
json\t'One JSON object per line'
csv\t'Comma-separated values with a header row'"
complete -c tcpstates -l snapshot -d 'Instead of the stream, print what the connections are now, every INTERVAL (e.g. 1s, 5s, 1m)' -r
complete -c tcpstates -l top -d 'A live full-screen view, refreshed every INTERVAL [default: 1s]: per-state counts and their trend, who holds CLOSE_WAIT, TIME_WAIT by destination, the connections (sortable, filtered with /) and the latest transitions. Press ? for its keys, q to quit' -r
complete -c tcpstates -l events -d 'Also stream these events (comma-separated): retransmit, reset (sent and received), drop (TCP packets the kernel dropped, with its reason)' -r -f -a "retransmit\t'A segment retransmitted'
reset\t'An RST sent or received'
drop\t'A TCP packet dropped by the kernel, with its drop reason'"
complete -c tcpstates -l alert -d 'Report each socket once when it stays in STATE longer than DURATION (e.g. CLOSE_WAIT=30s); repeatable. Exit status 3 if any alert fired' -r
complete -c tcpstates -l count -d 'Stop after N transitions (with --snapshot: after N snapshots)' -r
complete -c tcpstates -l duration -d 'Stop after this long (e.g. 500ms, 5s, 2m)' -r
complete -c tcpstates -l metrics -d 'Serve Prometheus metrics on ADDR:PORT (e.g. 127.0.0.1:9977, or :9977 for every address) at /metrics, beside the stream or snapshots; covers every network namespace (or --netns)' -r
complete -c tcpstates -l metrics-labels -d 'Extra metric labels (comma-separated): comm, lport, rport, cgroup, service, netns. Each multiplies the number of series; past 10000 per metric the rest are counted as "other"' -r -f -a "comm\t'The owner\'s command name'
lport\t'The local port'
rport\t'The remote port'
cgroup\t'The socket\'s cgroup v2 id'
service\t'The socket\'s service: its systemd unit, container or Kubernetes pod'
netns\t'The socket\'s network namespace (inode)'"
complete -c tcpstates -l web-config -d 'Serve --metrics as this Prometheus web configuration file says (the exporters\' --web.config.file): TLS certificate and key, a client CA for mutual TLS, basic auth users with bcrypt hashes' -r -F
complete -c tcpstates -l ring-size -d 'Size of the kernel ring buffer (power of two, at least 4K; suffix K or M) [default: 1M per CPU, from 4M to 64M]' -r
complete -c tcpstates -l nice -d 'Scheduling niceness (-20 to 19) [default: -10 when started at the default 0, so that saturated CPUs do not starve the reader into losing events; a niceness the caller set, as with `nice -n 5 tcpstates`, is kept]' -r
complete -c tcpstates -s 4 -l ipv4 -d 'Trace IPv4 sockets only'
complete -c tcpstates -s 6 -l ipv6 -d 'Trace IPv6 sockets only'
complete -c tcpstates -s T -l timestamp -d 'Include a wall-clock time column (local time, HH:MM:SS.mmm)'
complete -c tcpstates -s w -l wide -d 'Wide output: socket address (SKADDR), IP version, full-width addresses and command'
complete -c tcpstates -l summary -d 'With --snapshot: only the counts and diagnoses, without the connection table'
complete -c tcpstates -s i -l info -d 'With --snapshot: RTT, retransmits and unacknowledged data of each connection (as ss -i)'
complete -c tcpstates -l lifetimes -d 'Instead of transitions, one record per connection when it ends: owner, addresses, start, duration, bytes, segments, retransmits, RTT, who closed first and how it ended'
complete -c tcpstates -s q -l quiet -d 'Print no transitions, events or snapshots (with --metrics: run as an exporter only)'
complete -c tcpstates -s v -l verbose -d 'Print libbpf\'s own messages to stderr'
complete -c tcpstates -s h -l help -d 'Print help (see more with \'--help\')'
complete -c tcpstates -s V -l version -d 'Print version'
