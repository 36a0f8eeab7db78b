//! What the soak reads from `/proc`: resident memory and open file descriptors of one process,
//! and this process's children that have exited without being reaped (zombies).
//!
//! gemmactl's own figures are those of the process running the soak (`/proc/self`): `bench`
//! runs the supervisor in-process, exactly as `chat`, `batch` or `serve` do. An engine's are
//! those of the pid the supervisor reports for it (what `gemmactl ps` shows).

use crate::supervisor::status;

/// Resident memory (`VmRSS`) in MiB, if the process exists.
pub(super) fn rss_mib(pid: u32) -> Option<f64> {
    status::rss_bytes(pid).map(|b| b as f64 / (1024.0 * 1024.0))
}

/// Open file descriptors of a process, if its `/proc/<pid>/fd` can be listed. For this process
/// the count includes the one descriptor the listing itself holds open, the same every time.
pub(super) fn open_fds(pid: u32) -> Option<u32> {
    let entries = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(entries.count() as u32)
}

/// Whether the process runs (exited-but-unreaped counts as not running).
pub(super) fn alive(pid: u32) -> bool {
    status::process_alive(pid)
}

/// The fields of `/proc/<pid>/stat` after the command name, which is in parentheses and may
/// itself hold spaces or parentheses: the state letter is the first, the parent pid the second.
fn fields_after_name(stat: &str) -> Option<Vec<&str>> {
    Some(stat[stat.rfind(')')? + 1..].split_whitespace().collect())
}

fn state_and_parent(stat: &str) -> Option<(char, u32)> {
    let fields = fields_after_name(stat)?;
    let state = fields.first()?.chars().next()?;
    let parent = fields.get(1)?.parse().ok()?;
    Some((state, parent))
}

/// When the process started, in clock ticks since boot (`starttime`, the 22nd field of
/// `/proc/<pid>/stat`): with the pid, it names one process even after its pid is reused.
pub(super) fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields 3 onwards follow the name; starttime is field 22.
    fields_after_name(&stat)?.get(22 - 3)?.parse().ok()
}

/// This process's children as `(pid, zombie)`: every process whose parent is `parent`.
pub(super) fn children_of(parent: u32) -> Vec<(u32, bool)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may end between the listing and the read: skip it.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((state, p)) = state_and_parent(&stat) {
            if p == parent {
                found.push((pid, state == 'Z'));
            }
        }
    }
    found.sort_unstable();
    found
}

/// Children of `parent` that have exited and were never reaped.
pub(super) fn zombies_of(parent: u32) -> Vec<u32> {
    children_of(parent)
        .into_iter()
        .filter_map(|(pid, zombie)| zombie.then_some(pid))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_read_past_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (gemma (x) engine) Z 17 4242 4242 0 -1 4194560";
        assert_eq!(state_and_parent(stat), Some(('Z', 17)));
        assert_eq!(state_and_parent("garbage"), None);
        let stat = "7 (a) b) S 1 7 7 0 -1 4194560 10 0 0 0 1 2 0 0 20 0 1 0 123456 1000 20";
        assert_eq!(
            fields_after_name(stat).unwrap().get(22 - 3),
            Some(&"123456")
        );
    }

    #[test]
    fn this_process_has_memory_and_descriptors() {
        let me = std::process::id();
        assert!(rss_mib(me).is_some_and(|m| m > 0.0));
        // stdin, stdout, stderr at least.
        assert!(open_fds(me).is_some_and(|n| n >= 3));
        assert!(alive(me));
        assert!(start_time(me).is_some());
    }

    #[test]
    fn an_unreaped_child_is_a_zombie_until_it_is_waited_for() {
        let me = std::process::id();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // `true` exits at once; until it is waited for it stays a zombie child of this process.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !zombies_of(me).contains(&pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "the child never showed up as a zombie"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!alive(pid));
        child.wait().unwrap();
        assert!(!zombies_of(me).contains(&pid));
        assert!(children_of(me).iter().all(|(p, _)| *p != pid));
    }
}
