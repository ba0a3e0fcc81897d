//! Run-time selection of the widest vector instructions for hot loops (resampler, mel bands,
//! and moi-detect's spectrum).
//!
//! The loops are written once, portably, as `#[inline(always)]` functions; [`multiversion`](crate::multiversion)
//! compiles each for AVX-512, AVX2 and the baseline target and picks one per call. Rust never
//! contracts `a * b + c` into a fused multiply-add on its own, so all three compilations give
//! bit-identical results; only the speed differs.

/// Whether the AVX-512 compilation may run on this CPU.
#[cfg(target_arch = "x86_64")]
pub fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512dq")
}

/// Whether the AVX2 compilation may run on this CPU.
#[cfg(target_arch = "x86_64")]
pub fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Always false off x86-64.
#[cfg(not(target_arch = "x86_64"))]
pub fn has_avx512() -> bool {
    false
}

/// Always false off x86-64.
#[cfg(not(target_arch = "x86_64"))]
pub fn has_avx2() -> bool {
    false
}

/// `multiversion!(fn name(args) => body)` defines `name` as a dispatch to the AVX-512, AVX2 or
/// baseline compilation of the `#[inline(always)]` function `body` (same arguments, no result).
///
/// ```
/// #[inline(always)]
/// fn scale_body(x: &mut [f32], k: f32) {
///     x.iter_mut().for_each(|v| *v *= k);
/// }
/// av_audio::multiversion!(
///     /// Scales in place with the widest vectors available.
///     fn scale(x: &mut [f32], k: f32) => scale_body
/// );
/// let mut x = [1.0, 2.0];
/// scale(&mut x, 3.0);
/// assert_eq!(x, [3.0, 6.0]);
/// ```
#[macro_export]
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $body:path) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
                fn avx512($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                if $crate::simd::has_avx512() {
                    // SAFETY: the CPU supports the features `avx512` was compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if $crate::simd::has_avx2() {
                    // SAFETY: as above, for `avx2`.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}
