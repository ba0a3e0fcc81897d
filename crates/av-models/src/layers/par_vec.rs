//! Large buffers initialised on the rayon pool instead of by one zero-filling thread.
//!
//! `vec![0.0; n]` zero-fills on the calling thread; once glibc recycles the freed block (it
//! does for blocks under its dynamic mmap threshold, up to 32 MiB), that memset is a serial
//! pass over the whole buffer while the rayon workers wait. For a video step the activation-
//! and parameter-sized buffers of the fused blocks made this a visible share of the wall time.
//! Here each chunk is zeroed by the worker that fills it, while it is in that core's cache.

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

/// `dst.copy_from_slice(src)` on the rayon pool.
pub(crate) fn par_copy<T: Copy + Send + Sync>(dst: &mut [T], src: &[T]) {
    assert_eq!(dst.len(), src.len(), "par_copy: lengths differ");
    dst.par_chunks_mut(1 << 16)
        .zip(src.par_chunks(1 << 16))
        .for_each(|(d, s)| d.copy_from_slice(s));
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
        let src: Vec<u32> = (0..300_000).collect();
        let mut dst = vec![0; src.len()];
        par_copy(&mut dst, &src);
        assert_eq!(dst, src);
    }
}
