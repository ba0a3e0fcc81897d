//! Large buffers initialised on the rayon pool instead of by one zero-filling thread.
//!
//! `vec![0.0; n]` zero-fills on the calling thread; once glibc recycles the freed block (it
//! does for blocks under its dynamic mmap threshold, up to 32 MiB), that memset is a serial
//! pass over the whole buffer while the rayon workers wait. For a video step the activation-
//! and parameter-sized buffers of the fused blocks made this a visible share of the wall time.
//! Here each piece is handled by one worker while it is in that core's cache: zeroed and then
//! filled ([`par_fill`]), or, for fills that write every element, filled without the zeroing
//! pass ([`par_init`], [`par_concat`]).

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// A vector of `n` values built in `chunk`-sized pieces on the rayon pool: piece `i` is
/// zeroed (`T::default()`) and then handed to `f(i, piece)`, whose results are returned in
/// piece order.
pub(crate) fn par_fill_map<T, R, F>(n: usize, chunk: usize, f: F) -> (Vec<T>, Vec<R>)
where
    T: Copy + Default + Send + Sync,
    R: Send,
    F: Fn(usize, &mut [T]) -> R + Sync,
{
    let mut v: Vec<T> = Vec::with_capacity(n);
    let results = v.spare_capacity_mut()[..n]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .map(|(i, piece)| {
            piece.iter_mut().for_each(|m| {
                m.write(T::default());
            });
            // SAFETY: every element of `piece` was initialised just above, and
            // `MaybeUninit<T>` has the layout of `T`.
            let piece = unsafe { &mut *(piece as *mut [MaybeUninit<T>] as *mut [T]) };
            f(i, piece)
        })
        .collect();
    // SAFETY: the chunks cover all `n` elements of the capacity, each initialised above.
    unsafe { v.set_len(n) };
    (v, results)
}

/// [`par_fill_map`] for fills that write every element: the pieces are handed over
/// uninitialised, saving the zeroing pass (a memset per piece that cost the audio encoder's
/// step about 4 % of its CPU time).
///
/// # Safety
/// `f` must write every element of each piece it is given.
pub(crate) unsafe fn par_init_map<T, R, F>(n: usize, chunk: usize, f: F) -> (Vec<T>, Vec<R>)
where
    T: Copy + Send + Sync,
    R: Send,
    F: Fn(usize, &mut [MaybeUninit<T>]) -> R + Sync,
{
    let mut v: Vec<T> = Vec::with_capacity(n);
    let results = v.spare_capacity_mut()[..n]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .map(|(i, piece)| f(i, piece))
        .collect();
    // SAFETY: the pieces cover all `n` elements of the capacity, and the caller guarantees
    // `f` wrote every element of each.
    unsafe { v.set_len(n) };
    (v, results)
}

/// [`par_init_map`] without results.
///
/// # Safety
/// As [`par_init_map`]: `f` must write every element of each piece.
pub(crate) unsafe fn par_init<T, F>(n: usize, chunk: usize, f: F) -> Vec<T>
where
    T: Copy + Send + Sync,
    F: Fn(usize, &mut [MaybeUninit<T>]) + Sync,
{
    // SAFETY: the caller's contract.
    unsafe { par_init_map(n, chunk, f).0 }
}

/// [`par_fill_map`] without results.
pub(crate) fn par_fill<T, F>(n: usize, chunk: usize, f: F) -> Vec<T>
where
    T: Copy + Default + Send + Sync,
    F: Fn(usize, &mut [T]) + Sync,
{
    par_fill_map(n, chunk, f).0
}

/// `n` zeros (`T::default()`), written in parallel.
pub(crate) fn par_zeros<T: Copy + Default + Send + Sync>(n: usize) -> Vec<T> {
    // Pieces of 64 Ki elements: large enough to amortise the scheduling, small enough to
    // spread a few MB over the threads.
    par_fill(n, 1 << 16, |_, _| {})
}

/// The concatenation of `parts`, copied on the rayon pool in pieces of 64 Ki values, without
/// zero-filling the result first.
pub(crate) fn par_concat<T: Copy + Send + Sync>(parts: &[&[T]]) -> Vec<T> {
    let mut starts = Vec::with_capacity(parts.len());
    let mut n = 0;
    for p in parts {
        starts.push(n);
        n += p.len();
    }
    // SAFETY: the parts tile 0..n without gaps (each starts where the previous ended), so
    // every element of every piece is written.
    unsafe {
        par_init(n, 1 << 16, |i, dst: &mut [MaybeUninit<T>]| {
            let lo = i << 16;
            let hi = lo + dst.len();
            for (&s0, src) in starts.iter().zip(parts) {
                let (a, b) = (s0.max(lo), (s0 + src.len()).min(hi));
                if a < b {
                    let (d, v) = (&mut dst[a - lo..b - lo], &src[a - s0..b - s0]);
                    // SAFETY: both ranges hold b - a elements (bounds-checked slices above),
                    // and a fresh buffer never overlaps a part. One memcpy per part, where an
                    // element loop was copied a value at a time.
                    std::ptr::copy_nonoverlapping(v.as_ptr(), d.as_mut_ptr().cast::<T>(), b - a);
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_zeroed_filled_and_ordered() {
        let (v, r) = par_fill_map(1000, 64, |i, piece: &mut [f32]| {
            assert!(piece.iter().all(|&x| x == 0.0));
            piece.iter_mut().for_each(|x| *x = i as f32);
            piece.len()
        });
        assert_eq!(v.len(), 1000);
        assert_eq!(r.len(), 16);
        assert_eq!(r.iter().sum::<usize>(), 1000);
        assert!(v.iter().enumerate().all(|(j, &x)| x == (j / 64) as f32));
        assert!(par_zeros::<f64>(200_000).iter().all(|&x| x == 0.0));
        assert!(par_zeros::<f32>(0).is_empty());
        // SAFETY: every element of every piece is written.
        let (v, r) = unsafe {
            par_init_map(1000, 64, |i, piece: &mut [MaybeUninit<u32>]| {
                piece.iter_mut().for_each(|x| {
                    x.write(i as u32);
                });
                i
            })
        };
        assert_eq!(r, (0..16).collect::<Vec<_>>());
        assert!(v.iter().enumerate().all(|(j, &x)| x == (j / 64) as u32));
        let (a, b, c): (Vec<u32>, Vec<u32>, Vec<u32>) = (
            (0..70_000).collect(),
            Vec::new(),
            (70_000..200_001).collect(),
        );
        assert_eq!(
            par_concat(&[&a, &b, &c]),
            (0..200_001).collect::<Vec<u32>>()
        );
        assert!(par_concat::<f32>(&[]).is_empty());
    }
}
