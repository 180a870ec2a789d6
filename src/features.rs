//! What the running kernel offers the BPF program, found before it is loaded: the arguments of
//! its tracepoints and socket storage for tracing programs from its BTF, trampolines from a
//! two-instruction program, and where an old kernel frees timewait sockets from /proc/kallsyms.
//! Never from version numbers.

use std::os::fd::{FromRawFd, OwnedFd};

use libbpf_rs::btf::types::{Func, FuncProto, Typedef};
use libbpf_rs::btf::{Btf, BtfKind, BtfType};

/// How the end of TIME_WAIT (the free of a timewait socket) is recognised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimewaitEnd {
    /// `kmem_cache_free(call_site, ptr, cache)`: the timewait sockets' cache (6.2 on).
    ByCache,
    /// `kmem_cache_free(call_site, ptr, name)`: that cache's name (5.12 to 6.1).
    ByName,
    /// `kmem_cache_free(call_site, ptr)`: called from the kernel's timewait free function.
    ByCallSite { start: u64, end: u64 },
    /// Not on this kernel, for the reason given.
    Unavailable(String),
}

/// The program that sees timewait sockets freed, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimewaitEndProgram {
    /// on_cache_free, matching the tracepoint's third argument.
    ByArgument,
    /// on_cache_free_by_site.
    ByCallSite,
}

/// How accepts are seen (their acceptor then holds the new socket).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AcceptHook {
    /// fexit on `inet_csk_accept(sk, flags, err, kern)` (before 6.10).
    FexitFourArgs,
    /// fexit on `inet_csk_accept(sk, arg)` (6.10 on).
    FexitTwoArgs,
    /// Not on this kernel, for the reason given.
    Unavailable(String),
}

/// What the BPF program may use on this kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Features {
    /// Tracing programs may use socket storage (5.11 on); else a hash keyed by socket.
    pub socket_storage: bool,
    pub accept: AcceptHook,
    /// The tcp_rcv_space_adjust tracepoint: reads show their reader holds the socket. (Not
    /// writes: a hook on every write and read costs more than data-heavy loads allow.)
    pub read_hook: bool,
    pub timewait_end: TimewaitEnd,
    /// The kfree_skb tracepoint tells the drop reason (5.17 on).
    pub drop_reason: bool,
    /// The tcp_send_reset tracepoint also fires for resets sent without a full socket (for a
    /// packet no socket takes, or by a timewait socket): since 6.10, which gave it its third
    /// argument, the reset reason, in the same release.
    pub reset_without_socket: bool,
}

impl Features {
    /// Inspects the running kernel. Call before libbpf's printing is set up: the probe's
    /// expected failure on older kernels is kept quiet.
    pub fn of_running_kernel() -> Features {
        let btf = Btf::from_vmlinux().ok();
        let params = |tracepoint: &str| btf.as_ref().and_then(|b| tracepoint_params(b, tracepoint));
        let accept_params = btf
            .as_ref()
            .and_then(|b| function_params(b, "inet_csk_accept"));
        // The helper's tracing variant came with socket storage for tracing programs (5.11).
        let socket_storage = btf.as_ref().is_some_and(|b| {
            b.type_by_name::<Func<'_>>("bpf_sk_storage_get_tracing")
                .is_some()
        });
        Features {
            socket_storage,
            accept: accept_hook(accept_params.map(|p| p.len()), || {
                btf.as_ref()
                    .is_some_and(|b| fexit_loads(b, "inet_csk_accept"))
            }),
            read_hook: params("tcp_rcv_space_adjust").is_some(),
            timewait_end: timewait_end(params("kmem_cache_free").as_deref(), || {
                std::fs::read_to_string("/proc/kallsyms").ok()
            }),
            drop_reason: params("kfree_skb").is_some_and(|p| p.len() >= 3),
            reset_without_socket: params("tcp_send_reset").is_some_and(|p| p.len() >= 3),
        }
    }

    /// Everything on: for a run that loads no hook and reads no per-socket data.
    pub fn all() -> Features {
        Features {
            socket_storage: true,
            accept: AcceptHook::FexitTwoArgs,
            read_hook: true,
            timewait_end: TimewaitEnd::ByCache,
            drop_reason: true,
            reset_without_socket: true,
        }
    }

    pub fn timewait_end_is(&self, program: TimewaitEndProgram) -> bool {
        match self.timewait_end {
            TimewaitEnd::ByCache | TimewaitEnd::ByName => program == TimewaitEndProgram::ByArgument,
            TimewaitEnd::ByCallSite { .. } => program == TimewaitEndProgram::ByCallSite,
            TimewaitEnd::Unavailable(_) => false,
        }
    }

    /// One line per capability that is off, for stderr; `drops` and `resets` if those are
    /// streamed.
    pub fn missing(&self, drops: bool, resets: bool) -> Vec<String> {
        let mut lines = Vec::new();
        if let TimewaitEnd::Unavailable(why) = &self.timewait_end {
            lines.push(format!(
                "tcpstates: TIME_WAIT exit times unavailable on this kernel ({why})"
            ));
        }
        if let AcceptHook::Unavailable(why) = &self.accept {
            lines.push(format!(
                "tcpstates: accepts unseen on this kernel ({why}): an accepted socket is named \
                 by its acceptor from its first read or close"
            ));
        }
        if drops && !self.drop_reason {
            lines.push(DROP_REASONS_OFF.to_string());
        }
        if resets && !self.reset_without_socket {
            lines.push(RESETS_WITHOUT_SOCKET_OFF.to_string());
        }
        lines
    }
}

/// Said where sent resets without a socket are not seen.
pub const RESETS_WITHOUT_SOCKET_OFF: &str = "tcpstates: resets sent for packets no socket takes \
     unavailable on this kernel (its tcp_send_reset tracepoint fires only for sockets before 6.10)";
/// Said where drops come without their reason.
pub const DROP_REASONS_OFF: &str = "tcpstates: drop reasons unavailable on this kernel (its \
     kfree_skb tracepoint has no reason argument before 5.17)";

/// Does the running kernel's tcp_send_reset tracepoint fire for resets without a socket?
pub fn tcp_send_reset_without_socket() -> bool {
    Btf::from_vmlinux()
        .ok()
        .and_then(|btf| tracepoint_params(&btf, "tcp_send_reset"))
        .is_some_and(|params| params.len() >= 3)
}

/// Does the running kernel's kfree_skb tracepoint tell the drop reason?
pub fn kfree_skb_has_reason() -> bool {
    Btf::from_vmlinux()
        .ok()
        .and_then(|btf| tracepoint_params(&btf, "kfree_skb"))
        .is_some_and(|params| params.len() >= 3)
}

/// Does the kernel load an fexit program (a BPF trampoline) on `function`? Not where it is
/// built without them or refuses them. Loaded by hand: a probe object would parse the kernel's
/// BTF again, a third of the start time.
fn fexit_loads(btf: &Btf<'_>, function: &str) -> bool {
    use libbpf_rs::libbpf_sys as sys;
    let Some(func) = btf.type_by_name::<Func<'_>>(function) else {
        return false;
    };
    let opts = sys::bpf_prog_load_opts {
        expected_attach_type: sys::BPF_TRACE_FEXIT,
        attach_btf_id: u32::from(func.type_id()),
        ..Default::default()
    };
    load_return_zero(sys::BPF_PROG_TYPE_TRACING, opts).is_ok()
}

/// Loads a program of two instructions, `return 0`, of this type: does the kernel take it?
fn load_return_zero(
    prog_type: libbpf_rs::libbpf_sys::bpf_prog_type,
    mut opts: libbpf_rs::libbpf_sys::bpf_prog_load_opts,
) -> std::io::Result<OwnedFd> {
    use libbpf_rs::libbpf_sys as sys;
    // r0 = 0; exit: opcodes BPF_ALU64|BPF_MOV|BPF_K and BPF_JMP|BPF_EXIT, nothing else set.
    let program: [u64; 2] = [0xb7u64.to_le(), 0x95u64.to_le()];
    opts.sz = std::mem::size_of::<sys::bpf_prog_load_opts>() as _;
    // SAFETY: `program` is two 8-byte instructions laid out as struct bpf_insn (code, registers,
    // offset, immediate: little-endian, as the opcodes above are written), the strings are
    // NUL-terminated, and `opts` is a bpf_prog_load_opts with its size set.
    let fd = unsafe {
        sys::bpf_prog_load(
            prog_type,
            c"probe".as_ptr(),
            c"GPL".as_ptr(),
            program.as_ptr().cast(),
            program.len() as _,
            &mut opts,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(-fd));
    }
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// How accepts are seen, from inet_csk_accept's parameter count (None: not in the BTF) and
/// whether a trampoline program loads.
fn accept_hook(params: Option<usize>, trampolines: impl FnOnce() -> bool) -> AcceptHook {
    let variant = match params {
        Some(4) => AcceptHook::FexitFourArgs,
        Some(2) => AcceptHook::FexitTwoArgs,
        Some(n) => {
            return AcceptHook::Unavailable(format!("its inet_csk_accept takes {n} arguments"))
        }
        None => return AcceptHook::Unavailable("its BTF has no inet_csk_accept".to_string()),
    };
    if trampolines() {
        variant
    } else {
        AcceptHook::Unavailable("BPF trampolines (fexit) do not load".to_string())
    }
}

/// A kernel function's parameter types, from its BTF; None if it has no such function.
fn function_params(btf: &Btf<'_>, function: &str) -> Option<Vec<String>> {
    let func = btf.type_by_name::<libbpf_rs::btf::types::Func<'_>>(function)?;
    let proto = FuncProto::try_from(func.next_type()?.skip_mods_and_typedefs()).ok()?;
    Some(
        proto
            .iter()
            .map(|param| spell(btf.type_by_id::<BtfType<'_>>(param.ty)))
            .collect(),
    )
}

/// A tracepoint's argument types as C spells them (`struct kmem_cache *`), from the kernel's
/// `btf_trace_NAME` typedef; None if the kernel has no such tracepoint.
fn tracepoint_params(btf: &Btf<'_>, tracepoint: &str) -> Option<Vec<String>> {
    let typedef = btf.type_by_name::<Typedef<'_>>(&format!("btf_trace_{tracepoint}"))?;
    let pointer = typedef.next_type()?.skip_mods_and_typedefs();
    let proto = FuncProto::try_from(pointer.next_type()?.skip_mods_and_typedefs()).ok()?;
    // The first parameter is the tracepoint's own data, not an argument.
    Some(
        proto
            .iter()
            .skip(1)
            .map(|param| spell(btf.type_by_id::<BtfType<'_>>(param.ty)))
            .collect(),
    )
}

fn spell(ty: Option<BtfType<'_>>) -> String {
    let Some(ty) = ty.map(|t| t.skip_mods_and_typedefs()) else {
        return "void".to_string();
    };
    let name = || {
        ty.name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned())
    };
    match ty.kind() {
        BtfKind::Ptr => format!("{} *", spell(ty.next_type())),
        BtfKind::Struct => format!("struct {}", name()),
        BtfKind::Union => format!("union {}", name()),
        BtfKind::Enum | BtfKind::Enum64 => format!("enum {}", name()),
        BtfKind::Void => "void".to_string(),
        _ => name(),
    }
}

/// From kmem_cache_free's argument types (None: no such tracepoint) and, for the oldest
/// form, the kernel's symbols.
fn timewait_end(
    params: Option<&[String]>,
    kallsyms: impl FnOnce() -> Option<String>,
) -> TimewaitEnd {
    let Some(params) = params else {
        return TimewaitEnd::Unavailable("it has no kmem_cache_free tracepoint".to_string());
    };
    match params.get(2).map(String::as_str) {
        Some("struct kmem_cache *") => return TimewaitEnd::ByCache,
        Some("char *") => return TimewaitEnd::ByName,
        Some(other) => {
            return TimewaitEnd::Unavailable(format!(
                "its kmem_cache_free tracepoint's third argument is a `{other}`"
            ))
        }
        None => {}
    }
    let Some(symbols) = kallsyms() else {
        return TimewaitEnd::Unavailable(
            "its kmem_cache_free tracepoint takes no cache argument, and /proc/kallsyms is \
             unreadable"
                .to_string(),
        );
    };
    match call_site_range(&symbols) {
        Some((start, end)) => TimewaitEnd::ByCallSite { start, end },
        None => TimewaitEnd::Unavailable(
            "its kmem_cache_free tracepoint takes no cache argument, and /proc/kallsyms shows \
             no address of inet_twsk_put"
                .to_string(),
        ),
    }
}

/// The code that frees timewait sockets: `inet_twsk_free`, or `inet_twsk_put` where the former
/// is inlined into it, from its address to the next symbol's.
fn call_site_range(kallsyms: &str) -> Option<(u64, u64)> {
    let text_symbols = || {
        kallsyms.lines().filter_map(|line| {
            let mut fields = line.split_whitespace();
            let address = u64::from_str_radix(fields.next()?, 16).ok()?;
            let kind = fields.next()?;
            let name = fields.next()?;
            // Module symbols (a fourth field) come after the kernel's, out of its order.
            (fields.next().is_none() && matches!(kind, "t" | "T")).then_some((address, name))
        })
    };
    let start_of = |wanted: &str| {
        text_symbols()
            .find(|&(_, name)| name == wanted)
            .map(|(address, _)| address)
    };
    let start = start_of("inet_twsk_free").or_else(|| start_of("inet_twsk_put"))?;
    if start == 0 {
        return None; // addresses hidden (kptr_restrict)
    }
    let end = text_symbols()
        .map(|(address, _)| address)
        .filter(|&address| address > start)
        .min()?;
    Some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KALLSYMS: &str = "\
ffffffff81a0c000 T inet_twsk_bind_unhash
ffffffff81a0c0a0 t inet_twsk_free
ffffffff81a0c110 T inet_twsk_put
ffffffff81a0c160 T inet_twsk_hashdance
ffffffffc0100000 t veth_open\t[veth]
";

    fn params(list: &[&str]) -> Vec<String> {
        list.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn the_third_argument_says_how_timewait_frees_are_known() {
        let never = || -> Option<String> { panic!("kallsyms read without need") };
        let cache = params(&["long unsigned int", "void *", "struct kmem_cache *"]);
        assert_eq!(timewait_end(Some(&cache), never), TimewaitEnd::ByCache);
        let name = params(&["long unsigned int", "void *", "char *"]);
        assert_eq!(timewait_end(Some(&name), never), TimewaitEnd::ByName);
    }

    #[test]
    fn without_a_cache_argument_the_call_site_is_the_free_function() {
        let two = params(&["long unsigned int", "void *"]);
        assert_eq!(
            timewait_end(Some(&two), || Some(KALLSYMS.to_string())),
            TimewaitEnd::ByCallSite {
                start: 0xffffffff81a0c0a0,
                end: 0xffffffff81a0c110
            }
        );
        // Inlined: the put function holds the free.
        let inlined = KALLSYMS.replace("inet_twsk_free", "something_else");
        assert_eq!(
            call_site_range(&inlined),
            Some((0xffffffff81a0c110, 0xffffffff81a0c160))
        );
    }

    #[test]
    fn hidden_addresses_leave_timewait_ends_off_with_the_reason() {
        let hidden = KALLSYMS
            .lines()
            .map(|l| format!("0000000000000000{}", &l[16..]))
            .collect::<Vec<_>>()
            .join("\n");
        let two = params(&["long unsigned int", "void *"]);
        let end = timewait_end(Some(&two), || Some(hidden));
        assert_eq!(
            end,
            TimewaitEnd::Unavailable(
                "its kmem_cache_free tracepoint takes no cache argument, and /proc/kallsyms \
                 shows no address of inet_twsk_put"
                    .to_string()
            )
        );
        let features = Features {
            socket_storage: false,
            accept: AcceptHook::FexitFourArgs,
            read_hook: true,
            timewait_end: end,
            drop_reason: false,
            reset_without_socket: false,
        };
        assert_eq!(
            features.missing(false, false),
            vec![
                "tcpstates: TIME_WAIT exit times unavailable on this kernel (its \
                 kmem_cache_free tracepoint takes no cache argument, and /proc/kallsyms shows \
                 no address of inet_twsk_put)"
                    .to_string()
            ]
        );
        assert_eq!(
            features.missing(true, true)[1..],
            [DROP_REASONS_OFF, RESETS_WITHOUT_SOCKET_OFF]
        );
    }

    #[test]
    fn accepts_are_seen_by_the_variant_for_the_kernels_arguments() {
        let never = || -> bool { panic!("probed without need") };
        assert_eq!(accept_hook(Some(4), || true), AcceptHook::FexitFourArgs);
        assert_eq!(accept_hook(Some(2), || true), AcceptHook::FexitTwoArgs);
        assert_eq!(
            accept_hook(Some(2), || false),
            AcceptHook::Unavailable("BPF trampolines (fexit) do not load".to_string())
        );
        assert_eq!(
            accept_hook(None, never),
            AcceptHook::Unavailable("its BTF has no inet_csk_accept".to_string())
        );
        let features = Features {
            accept: accept_hook(Some(2), || false),
            ..Features::all()
        };
        assert_eq!(
            features.missing(false, false),
            [
                "tcpstates: accepts unseen on this kernel (BPF trampolines (fexit) do not load): \
              an accepted socket is named by its acceptor from its first read or close"
            ]
        );
    }

    #[test]
    fn the_probes_two_instructions_are_a_program_the_kernel_takes() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: loading a BPF program needs root");
            return;
        }
        let socket_filter = libbpf_rs::libbpf_sys::BPF_PROG_TYPE_SOCKET_FILTER;
        load_return_zero(socket_filter, Default::default()).expect("return 0 loads");
    }

    #[test]
    fn this_kernels_tracepoints_are_read_from_its_btf() {
        let Ok(btf) = Btf::from_vmlinux() else {
            return; // no kernel BTF where the unit tests run: nothing to read
        };
        let set_state = tracepoint_params(&btf, "inet_sock_set_state").expect("a TCP tracepoint");
        assert_eq!(set_state, params(&["struct sock *", "int", "int"]));
        assert_eq!(tracepoint_params(&btf, "no_such_tracepoint"), None);
        let accept = function_params(&btf, "inet_csk_accept").expect("a TCP function");
        assert!(matches!(accept.len(), 2 | 4), "{accept:?}");
    }
}
