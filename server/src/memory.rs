//! How the server process asks the kernel for memory, and gives it back.
//!
//! Why: mimalloc advises the kernel to back its arenas with transparent huge pages
//! (`MADV_HUGEPAGE`), and Debian's kernels honour that advice (`madvise` mode). A chat
//! server's heap is many small, long-lived pieces per connection, spread over the heap as
//! connections come and go: with 2 MiB pages, one live object keeps a whole 2 MiB page
//! resident, and every fresh page is zeroed whole on first touch, in the middle of a join
//! storm. Measured with crowds joining one room (alternating runs against the build
//! before, 2026-12-05; PERFORMANCE.md, "A crowd arriving"): 5,000 clients took 1.61-1.95 s
//! of CPU instead of 1.79-2.23 s, and left the server at 186-208 MB instead of 232-237 MB
//! (17.5-18.1 MB before the crowd instead of 27-29 MB, with 115-160 MB of it in huge
//! pages); 10,000 clients joined in 3.3-3.4 s instead of 3.9-4.6 s with 12% less CPU, at the
//! same resident size (at that size the huge pages are full anyway). Message throughput
//! did not move (ratios 0.89-1.09 over seven pairs of runs).
//!
//! What is guaranteed: after [`without_huge_pages`], no memory this process touches for
//! the first time is backed by a transparent huge page, whatever the allocator advises
//! and whether the system's mode is `always` or `madvise` (the kernel checks the process's
//! flag at each page fault). mimalloc is also built without its advice (the `no_thp`
//! feature in server/Cargo.toml), so in `madvise` mode even the pages it touches before
//! `main` are small. Not guaranteed: in `always` mode, pages faulted before the call keep
//! what they got (a few MiB), and on kernels without the flag (before Linux 3.15) or other
//! systems nothing changes.

/// How often [`give_back_freed_memory`] runs.
pub const GIVE_BACK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Asks mimalloc, every [`GIVE_BACK_EVERY`], to return the memory freed since to the
/// kernel. Runs for ever; spawn it once, in a server whose global allocator is mimalloc.
///
/// Why: mimalloc returns ("purges") freed memory after a short delay, but only when a
/// thread next calls into it, and a server whose crowd has settled does not: what a join
/// storm freed stayed resident. Purging at once instead (`MIMALLOC_PURGE_DELAY=0`) cost
/// 5-20% of message throughput. `mi_collect(true)` purges every arena's free memory and
/// the calling thread's empty pages at once. Measured with 10,000 clients joining one
/// room, then idle (2026-12-06): 7.8, 8.0 and 7.9 KB of RSS per client, against 11.4 and
/// 11.6 without this task and 9.0, 7.8 with `mi_collect(false)` (which leaves what has
/// not waited out the delay); messages with fan-out, three pairs of runs against
/// `mi_collect(false)`: 33.1/32.9, 33.9/30.7, 32.5/29.6 thousand a second, no cost seen.
///
/// Not guaranteed: that every freed page goes back (a page with one live object stays),
/// or that the empty pages of threads the task does not run on are collected (it runs on
/// whichever runtime thread is free, so over a few seconds it reaches each).
pub async fn give_back_freed_memory() {
    let mut tick = tokio::time::interval(GIVE_BACK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // SAFETY: mi_collect takes a flag and may be called from any thread at any time.
        unsafe { libmimalloc_sys::mi_collect(true) };
    }
}

/// Turns transparent huge pages off for this process (`PR_SET_THP_DISABLE`). Returns
/// whether the kernel took it; the server runs either way, only with more memory.
pub fn without_huge_pages() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and touches no memory
        // of ours.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_records_that_this_process_wants_no_huge_pages() {
        assert!(without_huge_pages());
        // SAFETY: as above; PR_GET_THP_DISABLE returns the flag.
        let flag = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(flag, 1);
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        // Linux 5.0 and later say so in the process's status too.
        if let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) {
            assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
        }
    }
}
