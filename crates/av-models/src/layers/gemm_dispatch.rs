//! One GEMM entry point for the CPU custom ops, single-threaded because the callers already
//! split work across threads: our AVX-512 kernel for f32 where the CPU has it (about 1.8x the
//! `gemm` crate's rate here, see [`super::sgemm`]), else the `gemm` crate candle itself uses.

use candle_core::WithDType;

/// C (m x n, row stride `ldc`, unit column stride) = A B, or C += A B with `accumulate`.
/// A's element (i, p) is `a[i * a_rs + p * a_cs]`, B's (p, j) is `b[p * b_rs + j * b_cs]`.
///
/// The caller guarantees every indexed element is in bounds and that `c` does not alias
/// `a` or `b`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_any<T: WithDType + 'static>(
    m: usize,
    n: usize,
    k: usize,
    a: *const T,
    a_rs: usize,
    a_cs: usize,
    b: *const T,
    b_rs: usize,
    b_cs: usize,
    c: *mut T,
    ldc: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() && super::sgemm::has_fast_path()
    {
        // SAFETY: T is f32 (checked above), so the casts are identities; bounds and aliasing
        // are the caller's contract, which is sgemm's.
        unsafe {
            super::sgemm::sgemm(
                m,
                n,
                k,
                a.cast(),
                a_rs,
                a_cs,
                b.cast(),
                b_rs,
                b_cs,
                c.cast(),
                ldc,
                accumulate,
            )
        };
        return;
    }
    let one = T::from_f64(1.0);
    // SAFETY: bounds and aliasing are the caller's contract (see above). gemm's convention is
    // dst = alpha * dst + beta * lhs * rhs, with dst read only when `read_dst`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            ldc as isize,
            accumulate,
            a,
            a_cs as isize,
            a_rs as isize,
            b,
            b_cs as isize,
            b_rs as isize,
            one,
            one,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}
