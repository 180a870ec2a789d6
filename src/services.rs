//! Which service, container or pod a socket belongs to, from its cgroup (the socket's own, set
//! when it was made): the cgroup v2 path, and parsed from it the systemd unit, the container
//! id of the usual runtimes and the Kubernetes pod UID. Cgroup ids are resolved through a cache
//! of the cgroup tree, walked again on a miss (at most once a second), never per event.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};

/// What a cgroup path says about its sockets' owner.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Service {
    /// The cgroup's path under the cgroup2 mount, from `/`.
    pub path: String,
    /// The innermost systemd unit (`nginx.service`, `session-3.scope`).
    pub unit: Option<String>,
    /// A container's id (64 hex digits): docker, containerd, CRI-O, podman, Kubernetes.
    pub container: Option<String>,
    /// A Kubernetes pod's UID (with dashes).
    pub pod: Option<String>,
    /// The fields above as JSON records carry them, written once (see json_fields).
    json: String,
}

/// Runtimes' scope units: `<prefix><64 hex>.scope`.
const SCOPE_PREFIXES: [&str; 4] = ["docker-", "cri-containerd-", "crio-", "libpod-"];

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A pod UID as the cgroup spells it: with dashes (cgroupfs) or underscores (systemd).
fn pod_uid(s: &str) -> Option<String> {
    let uid = s.replace('_', "-");
    let hex = uid.bytes().filter(|b| b.is_ascii_hexdigit()).count();
    (uid.len() == 36 && hex == 32 && uid.bytes().filter(|&b| b == b'-').count() == 4).then_some(uid)
}

impl Service {
    /// Parses a cgroup path (`/system.slice/nginx.service`, `/kubepods/burstable/pod<uid>/<id>`,
    /// `/kubepods.slice/.../kubepods-besteffort-pod<uid>.slice/cri-containerd-<id>.scope`).
    pub fn from_path(path: &str) -> Service {
        let mut service = Service {
            path: path.to_string(),
            ..Service::default()
        };
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        // Under kubepods (also nested, as in a node that runs in a container).
        let mut in_kubepods = false;
        for (i, part) in parts.iter().enumerate() {
            in_kubepods |= part.starts_with("kubepods");
            if let Some(stem) = part.strip_suffix(".scope") {
                let id = SCOPE_PREFIXES.iter().find_map(|p| stem.strip_prefix(p));
                if let Some(id) = id.filter(|id| is_container_id(id)) {
                    service.container = Some(id.to_string());
                }
            }
            if is_container_id(part)
                && (in_kubepods || parts.get(i.wrapping_sub(1)) == Some(&"docker"))
            {
                service.container = Some(part.to_string());
            }
            // kubepods-burstable-pod<uid>.slice, kubepods-pod<uid>.slice, pod<uid>
            let pod = part
                .strip_suffix(".slice")
                .and_then(|p| p.rsplit_once("-pod").map(|(_, uid)| uid))
                .or_else(|| part.strip_prefix("pod").filter(|_| in_kubepods));
            if let Some(uid) = pod.and_then(pod_uid) {
                service.pod = Some(uid);
            }
            if part.ends_with(".service") || part.ends_with(".scope") {
                service.unit = Some(part.to_string());
            }
        }
        service.json = service.render_json_fields();
        service
    }

    /// `"cgroup_path":…,"unit":…,"container_id":…,"pod_uid":…`, as serde_json writes them.
    fn render_json_fields(&self) -> String {
        let text = |v: Option<&str>| serde_json::to_string(&v).unwrap_or_else(|_| "null".into());
        format!(
            "\"cgroup_path\":{},\"unit\":{},\"container_id\":{},\"pod_uid\":{}",
            text(Some(&self.path)),
            text(self.unit.as_deref()),
            text(self.container.as_deref()),
            text(self.pod.as_deref())
        )
    }

    /// The JSON fields of a record that has this service, ready to copy into a line.
    pub fn json_fields(&self) -> &str {
        &self.json
    }

    /// Does it name a unit, a container or a pod (not the root cgroup or a slice)?
    pub fn is_named(&self) -> bool {
        self.unit.is_some() || self.container.is_some() || self.pod.is_some()
    }

    /// How text output names it: the pod and its container, a container, or a unit; `-` when
    /// none (the root cgroup, a slice).
    pub fn label(&self) -> String {
        let short = |id: &String| id[..12.min(id.len())].to_string();
        match (&self.pod, &self.container, &self.unit) {
            (Some(pod), Some(c), _) => format!("pod/{pod}/{}", short(c)),
            (Some(pod), None, _) => format!("pod/{pod}"),
            (None, Some(c), _) => short(c),
            (None, None, Some(unit)) => unit.clone(),
            (None, None, None) => "-".to_string(),
        }
    }

    /// Does `name` (--service) name it: its unit, a prefix of its container id, its pod UID?
    pub fn matches(&self, name: &str) -> bool {
        self.unit.as_deref() == Some(name)
            || self.pod.as_deref() == Some(name)
            || self
                .container
                .as_deref()
                .is_some_and(|c| name.len() >= 4 && c.starts_with(name))
    }
}

/// Where cgroup2 is mounted: /sys/fs/cgroup on unified hosts, /sys/fs/cgroup/unified on hybrid
/// ones (from the text of /proc/self/mounts).
pub fn cgroup2_mount(mounts: &str) -> Option<PathBuf> {
    mounts
        .lines()
        .map(|line| line.split(' ').collect::<Vec<_>>())
        .find(|fields| fields.len() > 2 && fields[2] == "cgroup2")
        .map(|fields| PathBuf::from(fields[1]))
}

/// Cgroup ids (the inode of the cgroup's directory) to services, by walking the cgroup tree;
/// an id not seen yet is looked up by itself, the way the kernel lets one open a cgroup by id.
pub struct Services {
    root: Option<PathBuf>,
    /// The mount's root, to open cgroups by id under it.
    mount: Option<File>,
    by_id: FxHashMap<u64, Arc<Service>>,
    /// Ids that could not be found (a cgroup removed since): not asked again until a walk.
    missing: FxHashSet<u64>,
    /// The same service for every id of one path (a cgroup removed and made again).
    interned: HashMap<String, Arc<Service>>,
    walked: Option<Instant>,
}

/// include/linux/exportfs.h: a kernfs node's file handle, its 64-bit id (= the inode).
const FILEID_KERNFS: i32 = 0xfe;

/// The least time between two walks of the tree on misses.
const REWALK: Duration = Duration::from_secs(1);

impl Services {
    /// Reads the host's cgroup tree (none where cgroup2 is not mounted: no services then).
    pub fn of_host() -> Services {
        let root = std::fs::read_to_string("/proc/self/mounts")
            .ok()
            .and_then(|m| cgroup2_mount(&m));
        Services::under(root)
    }

    pub fn under(root: Option<PathBuf>) -> Services {
        let mut services = Services {
            mount: root.as_ref().and_then(|r| File::open(r).ok()),
            root,
            by_id: FxHashMap::default(),
            missing: FxHashSet::default(),
            interned: HashMap::new(),
            walked: None,
        };
        services.walk();
        services
    }

    /// The service of cgroup `id`. One not seen yet is opened by its id (one lookup per new
    /// cgroup, then cached); where the kernel cannot do that, the tree is walked again, at most
    /// once a second.
    pub fn of(&mut self, id: u64) -> Option<Arc<Service>> {
        if let Some(service) = self.by_id.get(&id) {
            return Some(Arc::clone(service));
        }
        if self.missing.contains(&id) {
            return None;
        }
        if let Some(path) = self.path_of(id) {
            let service = Arc::clone(
                self.interned
                    .entry(path.clone())
                    .or_insert_with(|| Arc::new(Service::from_path(&path))),
            );
            self.by_id.insert(id, Arc::clone(&service));
            return Some(service);
        }
        if self.walked.is_some_and(|at| at.elapsed() < REWALK) {
            return None;
        }
        self.walk();
        let found = self.by_id.get(&id).cloned();
        if found.is_none() {
            self.missing.insert(id);
        }
        found
    }

    /// The path of cgroup `id`, opened by its id (a kernfs file handle) under the mount.
    fn path_of(&self, id: u64) -> Option<String> {
        let (root, mount) = (self.root.as_ref()?, self.mount.as_ref()?);
        #[repr(C)]
        struct KernfsHandle {
            bytes: u32,
            kind: i32,
            id: u64,
        }
        let mut handle = KernfsHandle {
            bytes: 8,
            kind: FILEID_KERNFS,
            id,
        };
        // SAFETY: `handle` is a file_handle header followed by its 8 bytes, as handle_bytes
        // says; the call only reads it, and returns a new descriptor or -1.
        let fd = unsafe {
            libc::open_by_handle_at(
                mount.as_raw_fd(),
                (&mut handle as *mut KernfsHandle).cast(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: the kernel just returned this descriptor, and nothing else owns it.
        let dir = unsafe { File::from_raw_fd(fd) };
        let full = std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd())).ok()?;
        Some(relative(root, &full))
    }

    /// Every cgroup whose service `name` names (--service), by id.
    pub fn named(&mut self, name: &str) -> Vec<(u64, Arc<Service>)> {
        self.walk();
        let mut found: Vec<(u64, Arc<Service>)> = self
            .by_id
            .iter()
            .filter(|(_, s)| s.matches(name))
            .map(|(id, s)| (*id, Arc::clone(s)))
            .collect();
        found.sort_by(|a, b| a.1.path.cmp(&b.1.path));
        found
    }

    /// The one cgroup `name` (--service) stands for: the outermost that it names, whose
    /// descendants it may name too (a unit's, a pod's containers). An error names what is
    /// wrong: nothing found, or several unrelated cgroups.
    pub fn resolve(&mut self, name: &str) -> Result<(u64, Arc<Service>), String> {
        let found = self.named(name);
        let Some(outer) = found.iter().min_by_key(|(_, s)| s.path.len()).cloned() else {
            return Err(format!(
                "--service {name}: no systemd unit, container or pod of that name in the cgroup \
                 tree"
            ));
        };
        let prefix = format!("{}/", outer.1.path.trim_end_matches('/'));
        let others: Vec<&str> = found
            .iter()
            .map(|(_, s)| s.path.as_str())
            .filter(|p| *p != outer.1.path && !p.starts_with(&prefix))
            .collect();
        if !others.is_empty() {
            return Err(format!(
                "--service {name}: names several cgroups ({}, {}): give more of it",
                outer.1.path,
                others.join(", ")
            ));
        }
        Ok(outer)
    }

    fn walk(&mut self) {
        self.walked = Some(Instant::now());
        self.missing.clear();
        let Some(root) = self.root.clone() else {
            return;
        };
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            let path = relative(&root, &dir);
            let service = self
                .interned
                .entry(path.clone())
                .or_insert_with(|| Arc::new(Service::from_path(&path)));
            self.by_id.insert(meta.ino(), Arc::clone(service));
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(entry.path());
                }
            }
        }
    }
}

/// `dir` under `root`, as `/a/b` (the root itself is `/`).
fn relative(root: &Path, dir: &Path) -> String {
    let rest = dir.strip_prefix(root).unwrap_or(dir);
    format!("/{}", rest.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f3c2b1a0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b";
    const UID: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";

    fn parsed(path: &str) -> (Option<String>, Option<String>, Option<String>, String) {
        let s = Service::from_path(path);
        let label = s.label();
        (s.unit, s.container, s.pod, label)
    }

    #[test]
    fn systemd_units() {
        assert_eq!(
            parsed("/system.slice/nginx.service"),
            (
                Some("nginx.service".into()),
                None,
                None,
                "nginx.service".into()
            )
        );
        assert_eq!(
            parsed("/user.slice/user-1000.slice/session-3.scope")
                .0
                .as_deref(),
            Some("session-3.scope")
        );
        assert_eq!(parsed("/"), (None, None, None, "-".into()));
        assert_eq!(parsed("/system.slice").3, "-");
    }

    #[test]
    fn container_runtimes() {
        for prefix in ["docker-", "cri-containerd-", "crio-", "libpod-"] {
            let path = format!("/system.slice/{prefix}{ID}.scope");
            let (unit, container, pod, label) = parsed(&path);
            assert_eq!(container.as_deref(), Some(ID), "{path}");
            assert_eq!((pod, label), (None, ID[..12].to_string()));
            assert_eq!(unit, Some(format!("{prefix}{ID}.scope")));
        }
        assert_eq!(parsed(&format!("/docker/{ID}")).1.as_deref(), Some(ID));
        // A scope that is not a container's, and a stray id outside a runtime's place.
        assert_eq!(parsed(&format!("/crio-conmon-{ID}.scope")).1, None);
        assert_eq!(parsed(&format!("/data/{ID}")).1, None);
    }

    #[test]
    fn kubernetes_pods_with_either_cgroup_driver() {
        let systemd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/\
             cri-containerd-{ID}.scope",
            UID.replace('-', "_")
        );
        let (_, container, pod, label) = parsed(&systemd);
        assert_eq!(
            (container.as_deref(), pod.as_deref()),
            (Some(ID), Some(UID))
        );
        assert_eq!(label, format!("pod/{UID}/{}", &ID[..12]));
        let guaranteed = format!(
            "/kubepods.slice/kubepods-pod{}.slice",
            UID.replace('-', "_")
        );
        assert_eq!(parsed(&guaranteed).2.as_deref(), Some(UID));
        assert_eq!(parsed(&guaranteed).3, format!("pod/{UID}"));
        let cgroupfs = format!("/kubepods/besteffort/pod{UID}/{ID}");
        let (_, container, pod, _) = parsed(&cgroupfs);
        assert_eq!(
            (container.as_deref(), pod.as_deref()),
            (Some(ID), Some(UID))
        );
        assert_eq!(
            parsed(&format!("/kubepods/pod{UID}")).2.as_deref(),
            Some(UID)
        );
        let nested = format!("/docker/{ID}/kubepods/besteffort/pod{UID}/{ID}");
        assert_eq!(parsed(&nested).2.as_deref(), Some(UID));
        assert_eq!(
            parsed(&format!("/pod{UID}")).2,
            None,
            "pod<uid> outside kubepods"
        );
    }

    #[test]
    fn a_service_is_named_by_unit_container_prefix_or_pod() {
        let s = Service::from_path(&format!("/kubepods/burstable/pod{UID}/{ID}"));
        assert!(s.matches(UID) && s.matches(&ID[..8]) && !s.matches(&ID[..3]));
        let unit = Service::from_path("/system.slice/web.service");
        assert!(unit.matches("web.service") && !unit.matches("web"));
    }

    #[test]
    fn a_cgroup_made_after_the_walk_is_opened_by_its_id() {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let Some(mount) = cgroup2_mount(&mounts) else {
            return; // no cgroup2 here: nothing to open
        };
        let mut services = Services::under(Some(mount.clone()));
        let dir = mount.join(format!(
            "tcpstates-by-id-{}/late.service",
            std::process::id()
        ));
        if std::fs::create_dir_all(&dir).is_err() {
            return; // not root: the suite's root tests cover it
        }
        let id = std::fs::metadata(&dir).unwrap().ino();
        let found = services.of(id).map(|s| s.path.clone());
        std::fs::remove_dir(&dir).unwrap();
        std::fs::remove_dir(dir.parent().unwrap()).unwrap();
        assert_eq!(
            found,
            Some(format!(
                "/tcpstates-by-id-{}/late.service",
                std::process::id()
            ))
        );
    }

    #[test]
    fn the_mount_is_found_on_unified_and_hybrid_hosts() {
        let hybrid =
            "tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_mount("proc /proc proc rw 0 0\n"), None);
    }

    #[test]
    fn ids_resolve_through_the_tree_and_misses_walk_it_again() {
        let root = std::env::temp_dir().join(format!("tcpstates-services-{}", std::process::id()));
        let unit = root.join("system.slice/web.service");
        std::fs::create_dir_all(&unit).unwrap();
        let mut services = Services::under(Some(root.clone()));
        let id = std::fs::metadata(&unit).unwrap().ino();
        assert_eq!(
            services.of(id).unwrap().unit.as_deref(),
            Some("web.service")
        );
        let later = root.join("system.slice/late.service");
        std::fs::create_dir_all(&later).unwrap();
        let late_id = std::fs::metadata(&later).unwrap().ino();
        services.walked = Some(Instant::now() - REWALK); // as if a second had passed
        assert_eq!(
            services.of(late_id).unwrap().path,
            "/system.slice/late.service"
        );
        assert_eq!(services.named("late.service").len(), 1);
        let nested = root.join("system.slice/late.service/worker");
        std::fs::create_dir_all(&nested).unwrap();
        assert_eq!(
            services.resolve("late.service").map(|(id, _)| id),
            Ok(late_id),
            "the outermost, with its descendants"
        );
        assert_eq!(
            services.resolve("gone.service").unwrap_err(),
            "--service gone.service: no systemd unit, container or pod of that name in the \
             cgroup tree"
        );
        std::fs::create_dir_all(root.join("user.slice/late.service")).unwrap();
        assert!(services
            .resolve("late.service")
            .unwrap_err()
            .contains("names several cgroups"));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
