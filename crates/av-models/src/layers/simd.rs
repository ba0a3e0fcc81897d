//! Runtime dispatch of hot f32 loops to AVX-512 / AVX2 builds of the same code.
//!
//! The crate is compiled for baseline x86-64 (SSE2), where the BatchNorm and patch loops stay
//! scalar; compiling the same body again with wider vector units enabled and choosing at run
//! time makes them several times faster without giving up portable binaries.

/// Whether the CPU has AVX-512 F/DQ (checked once).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx512() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
    })
}

/// AVX-512 mask of the first `n` lanes (all 16 for `n >= 16`): the tails of masked loads
/// and stores.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn low_lanes(n: usize) -> u16 {
    if n >= 16 {
        u16::MAX
    } else {
        ((1u32 << n) - 1) as u16
    }
}

/// Whether the CPU has AVX2 and FMA (checked once).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    })
}

/// Defines `fn name(args) -> Ret` that runs `body` (an `#[inline(always)]` fn with the same
/// signature) compiled for AVX-512, AVX2+FMA or the baseline, whichever the CPU supports.
macro_rules! dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty => $body:path) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn avx512($($arg: $ty),*) -> $ret {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn avx2($($arg: $ty),*) -> $ret {
                    $body($($arg),*)
                }
                if $crate::layers::simd::has_avx512() {
                    // SAFETY: the CPU supports every feature the function was compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if $crate::layers::simd::has_avx2() {
                    // SAFETY: as above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use dispatch;
