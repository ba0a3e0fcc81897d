//! Memory habits for big, short-lived buffers: zeroed buffers backed by transparent huge pages
//! where the OS offers them, and keeping freed buffers for reuse in long-running binaries.
//!
//! Hours of audio mean buffers of hundreds of megabytes that are written exactly once. With
//! 4 KiB pages, the first write to each page is a page fault: for a 10-minute recording that is
//! some 60,000 faults, about a sixth of the whole detector's time. Asking Linux for 2 MiB pages
//! (`madvise(MADV_HUGEPAGE)`, honoured in the common `madvise` THP mode) cuts the faults 512-fold.
//! Elsewhere the buffers are ordinary zeroed vectors.

/// Buffers smaller than this are not worth a system call (and are rarely page-aligned).
const HUGE_PAGE_MIN_BYTES: usize = 4 << 20;

/// Heap address space [`keep_freed_memory`] advises for huge pages ahead of use.
pub const HUGE_HEAP_RESERVE: usize = 960 << 20;

/// A zeroed `Vec<f32>` of length `n`, huge-page backed when large.
pub fn zeroed_f32(n: usize) -> Vec<f32> {
    // `vec![0.0; n]` is a `calloc`: fresh pages stay untouched until the advice is given.
    let v = vec![0.0f32; n];
    advise_huge_pages(&v);
    v
}

/// A zeroed `Vec<f64>` of length `n`, huge-page backed when large.
pub fn zeroed_f64(n: usize) -> Vec<f64> {
    let v = vec![0.0f64; n];
    advise_huge_pages(&v);
    v
}

/// Keeps freed buffers in the process heap instead of handing them back to the kernel.
///
/// A training loader decodes a fresh video per sample: decoder frame pools, RGB frames and
/// clip tensors of a few hundred kilobytes to a few megabytes each, freed again a moment later.
/// glibc returns such blocks to the kernel (`munmap`, heap trimming), and the next sample pays
/// a page fault plus a zero-fill for every 4 KiB it touches again: a fifth of the RepLAI
/// sample time on MP4 sources (docs/performance/video.md). Raising the mmap and trim
/// thresholds keeps them for reuse. Blocks above glibc's largest mmap threshold (32 MiB, e.g.
/// a batch of video activations) would still be mapped and unmapped per step, and every page
/// of them faulted in again, with a cross-core TLB flush on the first write after a read: that
/// was 15 % of an encoder training step. So `M_MMAP_MAX` is set to 0: the main heap serves
/// blocks of any size (glibc still falls back to mmap if it cannot grow, and worker-thread
/// arenas still map blocks larger than their 64 MiB heaps). The costs: a zeroed allocation
/// that reuses heap memory is cleared with `memset` instead of arriving as fresh zero pages,
/// and the heap only shrinks from its top, so fragmentation can keep the resident set above
/// the live data (mind container memory limits). Process-wide, so binaries call it once at
/// start-up, before spawning threads (libraries never do); the resident set then stays at its
/// high-water mark.
///
/// It also reserves the next [`HUGE_HEAP_RESERVE`] bytes of the heap (address space only: a
/// block allocated and freed before anything writes to it) with the advice to back them by
/// transparent huge pages, so the buffers carved from them later fault in 2 MiB at a time.
/// The encoders' GEMMs and patch packing walk rows and channels pages apart, and in a virtual
/// machine each 4 KiB TLB miss is a two-level page walk: with the heap in huge pages the
/// audio encoder's training step ran about 4.5 % faster and the video encoder's about 2.5 %
/// (alternating runs, docs/performance/models.md, session 12). The heap beyond the reserve,
/// and worker threads' own arenas, keep ordinary pages; so does the reserve when glibc cannot
/// grow the heap, trims it on the spot (more than 64 MiB already free at its top), or is
/// asked to fill freed memory (`MALLOC_PERTURB_`, which would write the whole block: then it
/// is skipped). Under strict overcommit (`vm.overcommit_memory = 2`) the reserve counts
/// against the commit limit while it lasts. Setting
/// `REPLAI_RETURN_MEMORY=1` in the environment skips it. Returns whether it took effect
/// (glibc on Linux only).
pub fn keep_freed_memory() -> bool {
    if std::env::var_os("REPLAI_RETURN_MEMORY").is_some_and(|v| v != "0") {
        return false;
    }
    keep_freed_memory_impl()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory_impl() -> bool {
    // 32 MiB is glibc's largest accepted mmap threshold on 64-bit targets.
    const MMAP_THRESHOLD: libc::c_int = 32 << 20;
    const TRIM_THRESHOLD: libc::c_int = 1 << 30;
    // SAFETY: mallopt only changes allocator tuning parameters; it is safe to call at any time.
    let kept = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
            && libc::mallopt(libc::M_MMAP_MAX, 0) == 1
    };
    // The reserve is freed back into the top of the heap, which stays (it is under the trim
    // threshold), so later blocks are carved from the advised range.
    const _: () = assert!(HUGE_HEAP_RESERVE < TRIM_THRESHOLD as usize);
    let perturb = std::env::var_os("MALLOC_PERTURB_").is_some_and(|v| !v.is_empty() && v != "0");
    if kept && !perturb {
        // SAFETY: a plain malloc/free pair; the block is never read or written, and the advice
        // only changes how its pages will be backed once the heap hands them out.
        unsafe {
            let p = libc::malloc(HUGE_HEAP_RESERVE);
            if !p.is_null() {
                advise_range(p as usize, HUGE_HEAP_RESERVE);
                libc::free(p);
            }
        }
    }
    kept
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory_impl() -> bool {
    false
}

/// Advises the kernel to back the 2 MiB-aligned interior of `buf` with huge pages.
fn advise_huge_pages<T>(buf: &[T]) {
    let bytes = std::mem::size_of_val(buf);
    if bytes >= HUGE_PAGE_MIN_BYTES {
        advise_range(buf.as_ptr() as usize, bytes);
    }
}

/// Advises huge pages for the 2 MiB-aligned interior of the `bytes` bytes at `start` (memory
/// the caller owns).
#[cfg(target_os = "linux")]
fn advise_range(start: usize, bytes: usize) {
    const HUGE: usize = 2 << 20;
    let aligned = start.next_multiple_of(HUGE);
    let end = (start + bytes) / HUGE * HUGE;
    if end <= aligned {
        return;
    }
    // SAFETY: the range lies inside an allocation we own; MADV_HUGEPAGE changes neither its
    // contents nor its validity, only how future faults are served. Failure (THP disabled,
    // old kernel) is harmless, so the return value is ignored.
    unsafe {
        libc::madvise(
            aligned as *mut libc::c_void,
            end - aligned,
            libc::MADV_HUGEPAGE,
        );
    }
}

/// No huge-page advice outside Linux.
#[cfg(not(target_os = "linux"))]
fn advise_range(_start: usize, _bytes: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_zeroed_and_writable() {
        for n in [0usize, 1, 1000, (8 << 20) / 4 + 3] {
            let mut a = zeroed_f32(n);
            let mut b = zeroed_f64(n);
            assert_eq!(a.len(), n);
            assert!(a.iter().all(|&x| x == 0.0) && b.iter().all(|&x| x == 0.0));
            if n > 0 {
                a[n - 1] = 1.0;
                b[n / 2] = 2.0;
                assert_eq!(a[n - 1] + b[n / 2] as f32, 3.0);
            }
        }
    }
}
