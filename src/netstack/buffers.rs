//! The memory of the smoltcp sockets' buffers: zeroed pages from the kernel, not from the heap.
//!
//! Each TCP socket owns two buffers of `tcp_buffer` bytes (2 MiB each by default), allocated
//! when a connection starts (our SYN) or a listener is put in place (the peer's SYN takes one).
//! glibc serves a zeroed allocation that large from `mmap` (already zero, no work until a page
//! is touched) only until the first such block is freed: it then raises its mmap threshold above
//! the block's size, and every later socket's buffers come from the heap and are cleared with
//! `memset`, 4 MiB per socket. That was 39 % of a userspace daemon's CPU while it opened
//! connections one after another, and about 0.5 ms on each side of every new connection,
//! in front of the SYN and of the SYN-ACK (BENCHMARKS.md, "first byte").
//!
//! [`reserve_for`] pins glibc's mmap threshold at the buffer size (and its trim threshold at
//! twice that, as glibc's own adjustment would), so socket buffers keep coming from `mmap`:
//! the kernel maps zero pages lazily and a short connection touches only a few of them.
//! Smaller allocations are served as before.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Allocations below this keep their usual path (glibc's own default threshold).
    const MIN_THRESHOLD: usize = 128 * 1024;
    /// The threshold set so far (0: none): only ever lowered, so every stack's buffers qualify.
    static SET: AtomicUsize = AtomicUsize::new(0);

    pub(super) fn reserve_for(buffer: usize) {
        if buffer < MIN_THRESHOLD {
            // Small buffers: clearing them costs little; leave glibc alone.
            return;
        }
        let mut cur = SET.load(Ordering::Relaxed);
        loop {
            if cur != 0 && cur <= buffer {
                return;
            }
            match SET.compare_exchange(cur, buffer, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        let (Ok(mmap), Ok(trim)) = (
            libc::c_int::try_from(buffer),
            libc::c_int::try_from(buffer.saturating_mul(2)),
        ) else {
            return;
        };
        // SAFETY: mallopt only changes allocator parameters; glibc takes its own lock.
        let ok = unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, mmap) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, trim) == 1
        };
        if !ok {
            tracing::debug!(buffer, "mallopt refused the mmap threshold");
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub(super) fn reserve_for(_buffer: usize) {}
}

/// Makes later zeroed allocations of `buffer` bytes (a socket buffer) come straight from the
/// kernel's zero pages instead of a `memset` of reused heap memory (see the module docs).
pub(super) fn reserve_for(buffer: usize) {
    imp::reserve_for(buffer);
}

/// A zeroed socket buffer of `len` bytes.
pub(super) fn socket_buffer(len: usize) -> Vec<u8> {
    vec![0u8; len]
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEN: usize = 2 << 20;

    #[test]
    fn buffers_are_zeroed_and_sized_after_many_allocations_and_frees() {
        reserve_for(LEN);
        for _ in 0..8 {
            let mut b = socket_buffer(LEN);
            assert_eq!(b.len(), LEN);
            assert!(b.iter().all(|&x| x == 0));
            // Dirty it, so a reused block would show.
            b.iter_mut().step_by(4096).for_each(|x| *x = 0xa5);
        }
    }

    /// Bytes glibc holds in blocks mapped on their own (`mmap`), not in its heaps.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn mapped() -> usize {
        // SAFETY: mallinfo2 only reads allocator statistics.
        unsafe { libc::mallinfo2() }.hblkhd
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn socket_buffers_stay_mapped_after_one_is_freed() {
        reserve_for(LEN);
        // Freeing a mapped block of this size is what used to move the next ones to the heap.
        drop(socket_buffer(LEN));
        // Other tests allocate at the same time: one clean observation of ours is enough.
        let seen = (0..20).any(|_| {
            let before = mapped();
            let b = socket_buffer(LEN);
            let during = mapped();
            drop(b);
            during >= before + LEN
        });
        assert!(
            seen,
            "a {LEN}-byte socket buffer came from the heap (memset), not mmap"
        );
    }
}
