//! Single-threaded f32 GEMM with a BLIS-style AVX-512 path and a portable fallback.
//!
//! Layout of the fast path: C rows are vectorised along `n`. A 12×32 microkernel keeps
//! 24 zmm accumulators in registers; B is packed into KC×32 micro-panels (or read in place
//! where its source keeps them packed: `PackB::packed`) and A into 12×KC micro-panels (both
//! zero-padded), loop order NC → KC → MC → jr → ir.

use std::mem::MaybeUninit;

/// Rows of C computed by one microkernel call (12 broadcasts of packed A per k).
const MR: usize = 12;
/// Columns of C computed by one microkernel call (two zmm vectors of packed B per k).
const NR: usize = 32;
/// Depth of one packed block: a KC×NR B micro-panel (32 KiB) stays in L1.
const KC: usize = 256;
/// [`KC`] for B sources that pack panels ahead of the GEMM.
pub(crate) const DEPTH_BLOCK: usize = KC;
/// Rows of one packed A block: MC×KC floats (≈ 240 KiB) stay in L2.
const MC: usize = 240;
/// Columns of one packed B block: KC×NC floats (1 MiB) stay in L2 next to the A block.
const NC: usize = 1024;

// Depth blocks start on multiples of KC and column panels on multiples of NR; a `PackB` that
// builds a panel's rows from NR-wide pieces (the weight gradient's transposed patches) relies
// on every depth block starting on such a piece.
const _: () = assert!(KC.is_multiple_of(NR) && NC.is_multiple_of(NR));

/// C = A·B (accumulate=false) or C += A·B (accumulate=true), single-threaded.
/// A is m×k with element (i,p) at a[i*a_rs + p*a_cs]; B is k×n with (p,j) at b[p*b_rs + j*b_cs];
/// C is m×n row-major with row stride ldc (element (i,j) at c[i*ldc + j]).
/// Strides may be any positive values (transposed views are common: a_rs=1,a_cs=m etc).
///
/// # Safety
/// All indexed elements must be in bounds; c must not alias a or b.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: *const f32,
    b_rs: usize,
    b_cs: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    // SAFETY: C's bounds are the caller's contract.
    if unsafe { trivial(m, n, k, c, ldc, accumulate) } {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if has_fast_path() {
            // SAFETY: avx512f was detected at run time; bounds are the caller's contract.
            unsafe {
                let a = avx512::StridedA { a, a_rs, a_cs };
                let b = avx512::Strided { b, b_rs, b_cs };
                avx512::gemm(m, n, k, &a, &b, c, ldc, accumulate)
            };
            return;
        }
    }
    // SAFETY: same contract as this function.
    unsafe { fallback(m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, c, ldc, accumulate) };
}

/// Handles the empty products (no rows, columns or depth: C = 0 unless accumulating) and
/// returns whether it did.
///
/// # Safety
/// Rows `0..m` of C (`n` elements each, `ldc` apart) must be writable.
unsafe fn trivial(m: usize, n: usize, k: usize, c: *mut f32, ldc: usize, accumulate: bool) -> bool {
    if m == 0 || n == 0 {
        return true;
    }
    if k > 0 {
        return false;
    }
    if !accumulate {
        for i in 0..m {
            // SAFETY: the caller guarantees row i of C (n elements) is in bounds.
            unsafe { core::ptr::write_bytes(c.add(i * ldc), 0, n) };
        }
    }
    true
}

/// Width of the B micro-panels the fast path packs (columns of C per microkernel call).
pub(crate) const PANEL_WIDTH: usize = NR;

/// A B operand that packs its own micro-panels, so a GEMM can read B from a layout that is not a
/// strided matrix (a convolution's patches straight from its input, with no patch matrix).
pub(crate) trait PackB: Sync {
    /// Writes rows `pc..pc + kc` and columns `j..j + nr` of B (`nr` <= [`PANEL_WIDTH`]) to
    /// `dst` as `dst[p * PANEL_WIDTH + jj] = B(pc + p, j + jj)`, with zeros in columns
    /// `nr..PANEL_WIDTH`. `pc` is a multiple of the GEMM's depth block, itself a multiple of
    /// [`PANEL_WIDTH`], and `j` a multiple of [`PANEL_WIDTH`].
    ///
    /// # Safety
    /// `dst` must be valid for `kc * PANEL_WIDTH` writes.
    unsafe fn pack(&self, pc: usize, kc: usize, j: usize, nr: usize, dst: *mut f32);

    /// The micro-panel of rows `pc..` and columns `j..` already packed in memory (laid out as
    /// [`PackB::pack`] writes it), when the source keeps its panels: the GEMM then reads it in
    /// place instead of packing a copy. Lets threads that split one product by rows share a
    /// B packed once.
    ///
    /// # Safety
    /// Callers ask only for (pc, j) inside B's extent, as for [`PackB::pack`]. In turn the GEMM
    /// trusts the answer: a source returning `Some` must do so for every such (pc, j), each
    /// pointer valid for `kc * PANEL_WIDTH` reads (kc the depth block at pc) while the GEMM
    /// runs.
    unsafe fn packed(&self, _pc: usize, _j: usize) -> Option<*const f32> {
        None
    }
}

/// C = A·B or C += A·B like [`sgemm`], with B supplied as packed panels by `b` (B is k×n).
/// Returns `false`, doing nothing, when this CPU has no fast path (callers then build B and
/// use [`sgemm`]).
///
/// # Safety
/// A and C as in [`sgemm`]; `b` must be able to pack every panel of its k×n extent.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm_packed_b(
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: &impl PackB,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller's contract.
    unsafe {
        let a = avx512::StridedA { a, a_rs, a_cs };
        fast_gemm(m, n, k, &a, b, c, ldc, accumulate)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (m, n, k, a, a_rs, a_cs, b, c, ldc, accumulate);
        false
    }
}

/// The fast path's entry for any A source: `false` without AVX-512, the empty products, then
/// the blocked loops.
///
/// # Safety
/// A, B and C as the public entry points require.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn fast_gemm(
    m: usize,
    n: usize,
    k: usize,
    a: &impl avx512::PackA,
    b: &impl PackB,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) -> bool {
    if !has_fast_path() {
        return false;
    }
    // SAFETY: C's bounds are the caller's contract.
    if unsafe { trivial(m, n, k, c, ldc, accumulate) } {
        return true;
    }
    // SAFETY: avx512f was detected at run time; bounds are the caller's contract.
    unsafe { avx512::gemm(m, n, k, a, b, c, ldc, accumulate) };
    true
}

/// Writes the transpose of a `valid` x `kc` block (row `w` at `src + w * stride`, `kc`
/// contiguous values) as a kc x [`PANEL_WIDTH`] micro-panel: `dst[p * PANEL_WIDTH + w] =
/// src[w * stride + p]`, with zeros in columns `valid..`. Lets a [`PackB`] source that can only
/// produce rows of B^T hand the GEMM its panels.
///
/// # Safety
/// Requires the fast path ([`has_fast_path`]); `src` readable as described (`valid` <=
/// PANEL_WIDTH), `dst` writable for `kc * PANEL_WIDTH` floats.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn transpose_panel(
    src: *const f32,
    stride: usize,
    valid: usize,
    kc: usize,
    dst: *mut f32,
) {
    // SAFETY: the caller's contract.
    unsafe { avx512::pack_transpose::<NR>(src, stride, valid, kc, dst) }
}

/// An A operand packed once into the fast path's micro-panels, for GEMMs that would each pack
/// it again: a convolution's weight is the A of every column chunk and every thread.
///
/// Rows are grouped into segments of `segment` rows (the last may be shorter), each cut into
/// panels from its own first row, so a GEMM over one segment (a thread's share of the rows)
/// finds its panels as its own packing would have laid them out. Depth block `pc` (every
/// [`DEPTH_BLOCK`] rows of B) holds all segments' panels, `kc` deep each, at `pc * rows_pad`.
pub(crate) struct PackedA {
    data: Vec<f32>,
    m: usize,
    k: usize,
    segment: usize,
    /// Padded rows of a full segment (panels of 12 rows, a short tail panel of 4 or 8).
    segment_pad: usize,
    /// Padded rows of all segments.
    rows_pad: usize,
}

/// Writes one A micro-panel (see [`PanelSpot`]) into the `height * kc` values it is given.
pub(crate) type PanelFill<'a> = dyn Fn(PanelSpot, &mut [MaybeUninit<f32>]) + Sync + 'a;

/// Where one A micro-panel goes: rows `row0..row0 + rows` of A and depth `pc..pc + kc`,
/// written as `dst[p * height + i] = A(row0 + i, pc + p)` with zeros in rows `rows..height`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PanelSpot {
    /// First row of A.
    pub row0: usize,
    /// Rows of A in the panel (at most 12).
    pub rows: usize,
    /// Packed height (4, 8 or 12).
    pub height: usize,
    /// First depth index.
    pub pc: usize,
    /// Depth of the panel.
    pub kc: usize,
}

impl PackedA {
    /// Packs the m x k matrix with element (i, p) at `a[i * a_rs + p * a_cs]`, or `None`
    /// without the fast path (which alone reads packed A).
    pub(crate) fn new(
        m: usize,
        k: usize,
        segment: usize,
        a: &[f32],
        a_rs: usize,
        a_cs: usize,
    ) -> Option<Self> {
        assert!(
            m == 0 || k == 0 || (m - 1) * a_rs + (k - 1) * a_cs < a.len(),
            "packed A: source out of bounds"
        );
        let src = a.as_ptr() as usize;
        let fill = |spot: PanelSpot, dst: &mut [MaybeUninit<f32>]| {
            assert_eq!(dst.len(), spot.height * spot.kc, "packed A: panel size");
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the spot's rows and depth lie inside A (asserted above); `dst` holds
            // height x kc floats, all of which the pack writes; the fast path (AVX-512F) is
            // present, or `with` returns None before filling.
            unsafe {
                let src = (src as *const f32).add(spot.row0 * a_rs + spot.pc * a_cs);
                let dst = dst.as_mut_ptr().cast::<f32>();
                avx512::pack_panel_rows(src, a_rs, a_cs, spot.rows, spot.height, spot.kc, dst)
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (spot, dst, src);
        };
        // SAFETY: the fill writes every value of each panel (the pack zero-pads rows past
        // `rows`).
        unsafe { Self::with(m, k, segment, &fill) }
    }

    /// Packs panels written by `fill` on the rayon pool, or `None` without the fast path.
    ///
    /// # Safety
    /// `fill` must write every value of the slice it is given.
    pub(crate) unsafe fn with(
        m: usize,
        k: usize,
        segment: usize,
        fill: &PanelFill<'_>,
    ) -> Option<Self> {
        use rayon::prelude::*;
        if !has_fast_path() {
            return None;
        }
        let segment = segment.clamp(1, m.max(1));
        let padded = |rows: usize| {
            let full = rows / MR * MR;
            full + if rows > full {
                panel_height(rows - full)
            } else {
                0
            }
        };
        let segment_pad = padded(segment);
        let rows_pad = (m / segment) * segment_pad + padded(m % segment);
        // Panels of every (depth block, row): (offset, spot).
        let mut spots = Vec::new();
        let mut pc = 0;
        while pc < k {
            let kc = KC.min(k - pc);
            let mut row0 = 0;
            let mut at = pc * rows_pad;
            while row0 < m {
                let seg_end = ((row0 / segment + 1) * segment).min(m);
                let rows = MR.min(seg_end - row0);
                let height = panel_height(rows);
                spots.push((
                    at,
                    PanelSpot {
                        row0,
                        rows,
                        height,
                        pc,
                        kc,
                    },
                ));
                at += height * kc;
                row0 += rows;
            }
            pc += KC;
        }
        let len = rows_pad * k;
        let mut data: Vec<f32> = Vec::with_capacity(len);
        let base = SendPtr(data.as_mut_ptr());
        spots.par_iter().with_min_len(8).for_each(|&(at, spot)| {
            // SAFETY: the spots tile 0..len: each depth block holds its panels one after
            // another (height x kc each, rows_pad x kc in all) at pc * rows_pad, so each task
            // gets a disjoint piece of the allocation.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(
                    base.get().add(at).cast::<MaybeUninit<f32>>(),
                    spot.height * spot.kc,
                )
            };
            fill(spot, dst)
        });
        // SAFETY: every element was written by `fill` (each spot in full: the caller's
        // contract), and the spots tile the buffer (above).
        unsafe { data.set_len(len) };
        Some(Self {
            data,
            m,
            k,
            segment,
            segment_pad,
            rows_pad,
        })
    }
}

/// C = A·B or C += A·B like [`sgemm_packed_b`], with rows `m0..m0 + m` of A packed a block
/// at a time by `fill` (see [`PanelSpot`]; it gets rows of A, counted from row 0), for an A
/// that is not a strided matrix (a convolution's flipped weight). Returns `false`, doing
/// nothing, without the fast path.
///
/// # Safety
/// C as in [`sgemm`]; `fill` must write every value of the slice it is given, and `b` must be
/// able to pack every panel of its k x n extent.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm_filled_a(
    m: usize,
    n: usize,
    k: usize,
    (fill, m0): (&PanelFill<'_>, usize),
    b: &impl PackB,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) -> bool {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller's contract.
    unsafe {
        fast_gemm(m, n, k, &avx512::Filled { fill, m0 }, b, c, ldc, accumulate)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (m, n, k, fill, m0, b, c, ldc, accumulate);
        false
    }
}

/// A raw pointer the packing tasks share (they write disjoint panels).
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only to write disjoint regions of one buffer from different threads.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Packed height of an A panel holding `rows` valid rows: short tails use a 4- or 8-row kernel.
#[inline(always)]
fn panel_height(rows: usize) -> usize {
    match rows {
        0..=4 => 4,
        5..=8 => 8,
        _ => MR,
    }
}

/// C = A·B or C += A·B like [`sgemm_packed_b`], with A the `m` rows of `a` from row `m0`:
/// one whole segment (m0 a multiple of the segment length, m the segment's rows).
/// Returns `false`, doing nothing, without the fast path.
///
/// # Safety
/// C as in [`sgemm`]; `b` must be able to pack every panel of its k x n extent, with `k`
/// equal to A's depth.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm_packed_ab(
    m: usize,
    n: usize,
    k: usize,
    (a, m0): (&PackedA, usize),
    b: &impl PackB,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) -> bool {
    assert!(
        k == a.k && m0.is_multiple_of(a.segment) && m0 < a.m && m == a.segment.min(a.m - m0),
        "packed A: rows {m0}..+{m} or depth {k} are not one of its segments ({} rows in \
         segments of {}, depth {})",
        a.m,
        a.segment,
        a.k
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the panels of rows m0.. lie in `a.data` (the segment's offset inside each depth
    // block, checked above); B and C are the caller's contract.
    unsafe {
        let src = avx512::Prepacked {
            base: a.data.as_ptr(),
            seg_off: m0 / a.segment * a.segment_pad,
            rows_pad: a.rows_pad,
        };
        fast_gemm(m, n, k, &src, b, c, ldc, accumulate)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (m, n, k, a, m0, b, c, ldc, accumulate);
        false
    }
}

/// True when the fast AVX-512 path is used on this CPU (runtime detection, cached).
pub fn has_fast_path() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static FAST: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *FAST.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Portable blocked i-p-j loop; correct on any CPU, auto-vectorises when B rows are contiguous.
#[allow(clippy::too_many_arguments)]
unsafe fn fallback(
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: *const f32,
    b_rs: usize,
    b_cs: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    const KB: usize = 128;
    const NB: usize = 512;
    for i in 0..m {
        // SAFETY: row i of C is in bounds by the caller's contract and does not alias A/B.
        let crow = unsafe { core::slice::from_raw_parts_mut(c.add(i * ldc), n) };
        if !accumulate {
            crow.fill(0.0);
        }
    }
    for j0 in (0..n).step_by(NB) {
        let nb = NB.min(n - j0);
        for p0 in (0..k).step_by(KB) {
            let kb = KB.min(k - p0);
            for i in 0..m {
                // SAFETY: as above.
                let crow = unsafe { core::slice::from_raw_parts_mut(c.add(i * ldc + j0), nb) };
                for p in p0..p0 + kb {
                    // SAFETY: (i,p) of A is in bounds by contract.
                    let aip = unsafe { *a.add(i * a_rs + p * a_cs) };
                    let brow = unsafe { b.add(p * b_rs + j0 * b_cs) };
                    if b_cs == 1 {
                        // SAFETY: B(p, j0..j0+nb) is in bounds and contiguous.
                        let bs = unsafe { core::slice::from_raw_parts(brow, nb) };
                        for (cv, bv) in crow.iter_mut().zip(bs) {
                            *cv += aip * bv;
                        }
                    } else {
                        for (j, cv) in crow.iter_mut().enumerate() {
                            // SAFETY: B(p, j0+j) is in bounds by contract.
                            *cv += aip * unsafe { *brow.add(j * b_cs) };
                        }
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::super::simd::low_lanes as lanes;
    use super::{panel_height as panel_rows, PackB, KC, MC, MR, NC, NR};
    use core::arch::x86_64::*;
    use std::cell::RefCell;

    /// Expands `$body` once per listed literal with `$i` bound to it, so LLVM sees constant indices.
    macro_rules! unroll {
        ($i:ident in [$($v:literal),*] $body:block) => {{ $( { let $i: usize = $v; $body } )* }};
    }

    /// Packing buffer of f32 with a 64-byte aligned view, reused per thread to avoid allocating per call.
    struct Buf {
        data: Vec<f32>,
    }

    impl Buf {
        /// Returns a 64-byte aligned pointer to at least `len` floats.
        fn get(&mut self, len: usize) -> *mut f32 {
            let need = len + 16;
            if self.data.len() < need {
                self.data = vec![0.0; need];
            }
            let p = self.data.as_mut_ptr();
            let off = p.align_offset(64);
            // SAFETY: off < 16 floats, and the buffer has 16 floats of slack.
            unsafe { p.add(off) }
        }
    }

    thread_local! {
        /// Per-thread packing storage (A block, B block); no shared mutable state across threads.
        static BUFS: RefCell<(Buf, Buf)> =
            const { RefCell::new((Buf { data: Vec::new() }, Buf { data: Vec::new() })) };
    }

    /// A strided k×n matrix: element (p, j) at `b[p * b_rs + j * b_cs]`.
    pub(super) struct Strided {
        pub(super) b: *const f32,
        pub(super) b_rs: usize,
        pub(super) b_cs: usize,
    }

    // SAFETY: only read, and only within the bounds the GEMM's caller vouched for.
    unsafe impl Sync for Strided {}

    impl PackB for Strided {
        unsafe fn pack(&self, pc: usize, kc: usize, j: usize, nr: usize, dst: *mut f32) {
            // SAFETY: the caller's bounds contract covers B(pc.., j..); the fast path is only
            // taken on CPUs with avx512f.
            unsafe {
                let src = self.b.add(pc * self.b_rs + j * self.b_cs);
                pack_panel::<NR>(src, self.b_cs, self.b_rs, nr, kc, dst)
            }
        }
    }

    /// Where the blocked loops get their packed A blocks.
    pub(super) trait PackA {
        /// The packed rows `ic..ic + mc` (ic a multiple of MC) at depth `pc..pc + kc`, as
        /// consecutive micro-panels (`kc` x panel height each), packed into `buf` (room for
        /// `mc` rounded up to MR, times `kc`) unless kept packed.
        ///
        /// # Safety
        /// AVX-512F must be present; the rows and depth lie inside A.
        unsafe fn block(
            &self,
            ic: usize,
            pc: usize,
            mc: usize,
            kc: usize,
            buf: *mut f32,
        ) -> *const f32;
    }

    /// A strided m x k matrix: element (i, p) at `a[i * a_rs + p * a_cs]`.
    pub(super) struct StridedA {
        pub(super) a: *const f32,
        pub(super) a_rs: usize,
        pub(super) a_cs: usize,
    }

    impl PackA for StridedA {
        unsafe fn block(
            &self,
            ic: usize,
            pc: usize,
            mc: usize,
            kc: usize,
            buf: *mut f32,
        ) -> *const f32 {
            // SAFETY: the caller's contract.
            unsafe {
                pack_a_block(
                    self.a.add(ic * self.a_rs + pc * self.a_cs),
                    self.a_rs,
                    self.a_cs,
                    mc,
                    kc,
                    buf,
                );
            }
            buf
        }
    }

    /// One segment of a [`super::PackedA`]: rows `ic..` of depth block `pc` start at
    /// `base + pc * rows_pad + (seg_off + ic) * kc`.
    pub(super) struct Prepacked {
        pub(super) base: *const f32,
        pub(super) seg_off: usize,
        pub(super) rows_pad: usize,
    }

    impl PackA for Prepacked {
        unsafe fn block(
            &self,
            ic: usize,
            pc: usize,
            _mc: usize,
            kc: usize,
            _buf: *mut f32,
        ) -> *const f32 {
            // SAFETY: the caller asks for rows and depth inside the segment, which `PackedA`
            // laid out at this offset.
            unsafe { self.base.add(pc * self.rows_pad + (self.seg_off + ic) * kc) }
        }
    }

    /// Rows `m0..` of an A whose panels `fill` writes.
    pub(super) struct Filled<'a> {
        pub(super) fill: &'a super::PanelFill<'a>,
        pub(super) m0: usize,
    }

    impl PackA for Filled<'_> {
        unsafe fn block(
            &self,
            ic: usize,
            pc: usize,
            mc: usize,
            kc: usize,
            buf: *mut f32,
        ) -> *const f32 {
            let mut ir = 0;
            while ir < mc {
                let rows = MR.min(mc - ir);
                let spot = super::PanelSpot {
                    row0: self.m0 + ic + ir,
                    rows,
                    height: panel_rows(rows),
                    pc,
                    kc,
                };
                // SAFETY: the buffer holds mc rounded up to MR rows of kc (the caller's
                // contract); panel ir starts at ir * kc and is height <= MR rows of kc.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(
                        buf.add(ir * kc).cast::<std::mem::MaybeUninit<f32>>(),
                        spot.height * kc,
                    )
                };
                (self.fill)(spot, dst);
                ir += MR;
            }
            buf
        }
    }

    /// Packs one A micro-panel of `rows` rows (element (i, p) at `src[i * a_rs + p * a_cs]`)
    /// `height` high and `kc` deep, zeros in rows `rows..height`.
    ///
    /// # Safety
    /// AVX-512F must be present; the rows and depth are in bounds; `dst` holds height x kc.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pack_panel_rows(
        src: *const f32,
        a_rs: usize,
        a_cs: usize,
        rows: usize,
        height: usize,
        kc: usize,
        dst: *mut f32,
    ) {
        unsafe {
            match height {
                4 => pack_panel::<4>(src, a_rs, a_cs, rows, kc, dst),
                8 => pack_panel::<8>(src, a_rs, a_cs, rows, kc, dst),
                _ => pack_panel::<MR>(src, a_rs, a_cs, rows, kc, dst),
            }
        }
    }

    /// Entry point of the fast path: borrows the thread's buffers and runs the blocked loops.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn gemm(
        m: usize,
        n: usize,
        k: usize,
        a: &impl PackA,
        b: &impl PackB,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        let kc_max = KC.min(k);
        let a_len = MC.min(m.div_ceil(MR) * MR) * kc_max;
        let b_len = if m <= MC {
            NR
        } else {
            NC.min(n.div_ceil(NR) * NR)
        } * kc_max;
        let run = |abuf: &mut Buf, bbuf: &mut Buf| {
            let ap = abuf.get(a_len);
            let bp = bbuf.get(b_len);
            // SAFETY: buffers are sized for one block; avx512f is present (checked by the caller).
            unsafe { blocked(m, n, k, a, b, c, ldc, accumulate, ap, bp) };
        };
        BUFS.with(|cell| match cell.try_borrow_mut() {
            Ok(mut bufs) => {
                let (ab, bb) = &mut *bufs;
                run(ab, bb);
            }
            Err(_) => run(&mut Buf { data: Vec::new() }, &mut Buf { data: Vec::new() }),
        });
    }

    /// The five BLIS loops around the microkernel.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn blocked(
        m: usize,
        n: usize,
        k: usize,
        a: &impl PackA,
        b: &impl PackB,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
        abuf: *mut f32,
        bbuf: *mut f32,
    ) {
        unsafe {
            if m <= MC {
                // One A block: pack each B micro-panel right before its use so it is hot in L1.
                let mut pc = 0;
                while pc < k {
                    let kc = KC.min(k - pc);
                    let load_c = accumulate || pc > 0;
                    let ap = a.block(0, pc, m, kc, abuf);
                    let mut jr = 0;
                    while jr < n {
                        let nr = NR.min(n - jr);
                        // SAFETY: the PackB contract (a packed panel is valid for kc x NR).
                        let bp = match b.packed(pc, jr) {
                            Some(bp) => bp,
                            None => {
                                b.pack(pc, kc, jr, nr, bbuf);
                                bbuf.cast_const()
                            }
                        };
                        run_panel(kc, ap, m, bp, c.add(jr), ldc, nr, load_c);
                        jr += NR;
                    }
                    pc += KC;
                }
                return;
            }
            let mut jc = 0;
            while jc < n {
                let nc = NC.min(n - jc);
                let mut pc = 0;
                while pc < k {
                    let kc = KC.min(k - pc);
                    let load_c = accumulate || pc > 0;
                    // Pack B(pc.., jc..) into ceil(nc/NR) micro-panels of kc×NR (unless B keeps
                    // its panels packed).
                    // SAFETY: the PackB contract (all panels or none are kept packed).
                    let prepacked = b.packed(pc, jc).is_some();
                    let mut jr = 0;
                    while jr < nc && !prepacked {
                        let nr = NR.min(nc - jr);
                        b.pack(pc, kc, jc + jr, nr, bbuf.add(jr * kc));
                        jr += NR;
                    }
                    let mut ic = 0;
                    while ic < m {
                        let mc = MC.min(m - ic);
                        let ap = a.block(ic, pc, mc, kc, abuf);
                        let mut jr = 0;
                        while jr < nc {
                            let nr = NR.min(nc - jr);
                            let cp = c.add(ic * ldc + jc + jr);
                            let bp = if prepacked {
                                // SAFETY: the PackB contract: every panel is kept packed.
                                b.packed(pc, jc + jr)
                                    .expect("PackB: some panels packed, not all")
                            } else {
                                bbuf.add(jr * kc).cast_const()
                            };
                            run_panel(kc, ap, mc, bp, cp, ldc, nr, load_c);
                            jr += NR;
                        }
                        ic += MC;
                    }
                    pc += KC;
                }
                jc += NC;
            }
        }
    }

    /// Packs an mc×kc block of A into MR-row micro-panels (the tail panel is 4, 8 or 12 rows).
    #[target_feature(enable = "avx512f")]
    unsafe fn pack_a_block(
        a: *const f32,
        a_rs: usize,
        a_cs: usize,
        mc: usize,
        kc: usize,
        abuf: *mut f32,
    ) {
        unsafe {
            let mut ir = 0;
            while ir < mc {
                let mr = MR.min(mc - ir);
                let (src, dst) = (a.add(ir * a_rs), abuf.add(ir * kc));
                pack_panel_rows(src, a_rs, a_cs, mr, panel_rows(mr), kc, dst);
                ir += MR;
            }
        }
    }

    /// Runs the microkernel down one packed B micro-panel for every A micro-panel of the block.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn run_panel(
        kc: usize,
        abuf: *const f32,
        mc: usize,
        bp: *const f32,
        c: *mut f32,
        ldc: usize,
        nr: usize,
        load_c: bool,
    ) {
        unsafe {
            let mut ir = 0;
            while ir < mc {
                let mr = MR.min(mc - ir);
                let cp = c.add(ir * ldc);
                let ap = abuf.add(ir * kc);
                let t = Tile {
                    kc,
                    a: ap,
                    b: bp,
                    c: cp,
                    ldc,
                    mr,
                    nr,
                    load_c,
                };
                if nr <= 8 {
                    match nr {
                        0..=2 => kernel_ntail::<2>(t),
                        3..=4 => kernel_ntail::<4>(t),
                        _ => kernel_ntail::<8>(t),
                    }
                    ir += MR;
                    continue;
                }
                match (panel_rows(mr), nr > 16) {
                    (4, false) => kernel::<4, 1>(t),
                    (4, true) => kernel::<4, 2>(t),
                    (8, false) => kernel::<8, 1>(t),
                    (8, true) => kernel::<8, 2>(t),
                    (_, false) => kernel::<MR, 1>(t),
                    (_, true) => kernel::<MR, 2>(t),
                }
                ir += MR;
            }
        }
    }

    /// Packs a W-wide, kc-deep panel: dst[p*W + w] = src[w*sw + p*sk] for w < valid, else 0.
    #[target_feature(enable = "avx512f")]
    unsafe fn pack_panel<const W: usize>(
        src: *const f32,
        sw: usize,
        sk: usize,
        valid: usize,
        kc: usize,
        dst: *mut f32,
    ) {
        unsafe {
            if sw == 1 {
                pack_contiguous::<W>(src, sk, valid, kc, dst);
            } else if sk == 1 {
                pack_transpose::<W>(src, sw, valid, kc, dst);
            } else {
                for p in 0..kc {
                    let d = dst.add(p * W);
                    for w in 0..W {
                        *d.add(w) = if w < valid {
                            *src.add(w * sw + p * sk)
                        } else {
                            0.0
                        };
                    }
                }
            }
        }
    }

    /// Panel dimension contiguous in memory: each k step is a masked vector copy.
    #[target_feature(enable = "avx512f")]
    unsafe fn pack_contiguous<const W: usize>(
        src: *const f32,
        sk: usize,
        valid: usize,
        kc: usize,
        dst: *mut f32,
    ) {
        unsafe {
            let nv = W.div_ceil(16);
            let mut masks = [0 as __mmask16; 2];
            let mut store = [0 as __mmask16; 2];
            for v in 0..nv {
                masks[v] = lanes(valid.saturating_sub(v * 16));
                store[v] = lanes(W - v * 16);
            }
            for p in 0..kc {
                let s = src.add(p * sk);
                let d = dst.add(p * W);
                if W == NR {
                    // Large row strides defeat the hardware prefetcher: fetch the next panel's rows.
                    _mm_prefetch::<_MM_HINT_T0>(s.wrapping_add(NR) as *const i8);
                    _mm_prefetch::<_MM_HINT_T0>(s.wrapping_add(NR + 16) as *const i8);
                }
                for v in 0..nv {
                    let x = _mm512_maskz_loadu_ps(masks[v], s.add(v * 16));
                    _mm512_mask_storeu_ps(d.add(v * 16), store[v], x);
                }
            }
        }
    }

    /// Transposes 16 rows of 16 floats held in registers.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn transpose16(r: &mut [__m512; 16]) {
        let mut t = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        let mut u = [_mm512_setzero_ps(); 16];
        for i in 0..4 {
            let t0 = _mm512_castps_pd(t[4 * i]);
            let t1 = _mm512_castps_pd(t[4 * i + 1]);
            let t2 = _mm512_castps_pd(t[4 * i + 2]);
            let t3 = _mm512_castps_pd(t[4 * i + 3]);
            u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
            u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
            u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
            u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
        }
        // u[4i+q] holds column 4L+q of rows 4i..4i+3 in 128-bit lane L.
        for q in 0..4 {
            let v0 = _mm512_shuffle_f32x4::<0x44>(u[q], u[4 + q]);
            let v1 = _mm512_shuffle_f32x4::<0xEE>(u[q], u[4 + q]);
            let v2 = _mm512_shuffle_f32x4::<0x44>(u[8 + q], u[12 + q]);
            let v3 = _mm512_shuffle_f32x4::<0xEE>(u[8 + q], u[12 + q]);
            r[q] = _mm512_shuffle_f32x4::<0x88>(v0, v2);
            r[4 + q] = _mm512_shuffle_f32x4::<0xDD>(v0, v2);
            r[8 + q] = _mm512_shuffle_f32x4::<0x88>(v1, v3);
            r[12 + q] = _mm512_shuffle_f32x4::<0xDD>(v1, v3);
        }
    }

    /// k dimension contiguous in memory: 16×16 blocks are loaded and transposed in registers.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pack_transpose<const W: usize>(
        src: *const f32,
        sw: usize,
        valid: usize,
        kc: usize,
        dst: *mut f32,
    ) {
        unsafe {
            let groups = W.div_ceil(16);
            let mut p = 0;
            while p < kc {
                let kk = 16.min(kc - p);
                let kmask = lanes(kk);
                for g in 0..groups {
                    let rows = valid.saturating_sub(g * 16).min(16);
                    let smask = lanes(W - g * 16);
                    // Straight-line masked loads/stores (zero masks for absent lines/steps) keep
                    // the 16 vectors in registers; masked-off lanes never fault.
                    let mut r = [_mm512_setzero_ps(); 16];
                    for (w, rw) in r.iter_mut().enumerate() {
                        let line = src.wrapping_add((g * 16 + w) * sw + p);
                        *rw = _mm512_maskz_loadu_ps(if w < rows { kmask } else { 0 }, line);
                        // Each line is a short stream the hardware prefetcher barely sees:
                        // fetch the same chunk of the next panel (W lines further) now.
                        if w < rows {
                            _mm_prefetch::<_MM_HINT_T0>(line.wrapping_add(W * sw) as *const i8);
                        }
                    }
                    transpose16(&mut r);
                    for (q, rq) in r.iter().enumerate() {
                        let d = dst.wrapping_add((p + q) * W + g * 16);
                        _mm512_mask_storeu_ps(d, if q < kk { smask } else { 0 }, *rq);
                    }
                }
                p += 16;
            }
        }
    }

    /// Operands of one microkernel call (kept in a struct so the kernel signature stays small).
    #[derive(Clone, Copy)]
    struct Tile {
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        mr: usize,
        nr: usize,
        load_c: bool,
    }

    /// Narrow column tail (nr ≤ NT ≤ 8): vectorised along the A panel's rows instead, so a few
    /// leftover columns cost a few FMAs per k rather than a full 16-wide kernel.
    #[target_feature(enable = "avx512f")]
    #[inline(never)]
    unsafe fn kernel_ntail<const NT: usize>(t: Tile) {
        unsafe {
            // Independent accumulator sets per unrolled k step hide the FMA latency.
            let u_steps = if NT <= 4 { 4 } else { 2 };
            let h = panel_rows(t.mr);
            let am = lanes(h);
            let mut acc = [_mm512_setzero_ps(); 16];
            let (a, b) = (t.a, t.b);
            let mut p = 0;
            while p + u_steps <= t.kc {
                unroll!(u in [0,1,2,3] {
                    if u < u_steps {
                        let av = _mm512_maskz_loadu_ps(am, a.add((p + u) * h));
                        let br = b.add((p + u) * NR);
                        unroll!(j in [0,1,2,3,4,5,6,7] {
                            if j < NT {
                                let bj = _mm512_set1_ps(*br.add(j));
                                acc[u * NT + j] = _mm512_fmadd_ps(av, bj, acc[u * NT + j]);
                            }
                        });
                    }
                });
                p += u_steps;
            }
            while p < t.kc {
                let av = _mm512_maskz_loadu_ps(am, a.add(p * h));
                let br = b.add(p * NR);
                unroll!(j in [0,1,2,3,4,5,6,7] {
                    if j < NT {
                        acc[j] = _mm512_fmadd_ps(av, _mm512_set1_ps(*br.add(j)), acc[j]);
                    }
                });
                p += 1;
            }
            let mut col = [0.0f32; 16];
            for j in 0..t.nr {
                let mut s = acc[j];
                for u in 1..u_steps {
                    s = _mm512_add_ps(s, acc[u * NT + j]);
                }
                _mm512_storeu_ps(col.as_mut_ptr(), s);
                for (i, &v) in col.iter().enumerate().take(t.mr) {
                    let d = t.c.add(i * t.ldc + j);
                    *d = if t.load_c { *d + v } else { v };
                }
            }
        }
    }

    /// ROWS×(16·NV) microkernel: C[0..mr, 0..nr] (+)= Apanel(ROWS×kc) · Bpanel(kc×NR).
    #[target_feature(enable = "avx512f")]
    #[inline(never)]
    unsafe fn kernel<const ROWS: usize, const NV: usize>(t: Tile) {
        unsafe {
            let mut acc = [_mm512_setzero_ps(); 2 * MR];
            let mut a = t.a;
            let mut b = t.b;
            for _ in 0..t.kc {
                let b0 = _mm512_loadu_ps(b);
                let b1 = if NV == 2 {
                    _mm512_loadu_ps(b.add(16))
                } else {
                    b0
                };
                unroll!(i in [0,1,2,3,4,5,6,7,8,9,10,11] {
                    if i < ROWS {
                        let ai = _mm512_set1_ps(*a.add(i));
                        acc[2 * i] = _mm512_fmadd_ps(ai, b0, acc[2 * i]);
                        if NV == 2 {
                            acc[2 * i + 1] = _mm512_fmadd_ps(ai, b1, acc[2 * i + 1]);
                        }
                    }
                });
                a = a.add(ROWS);
                b = b.add(NR);
            }
            let m0 = lanes(t.nr);
            let m1 = lanes(t.nr.saturating_sub(16));
            unroll!(i in [0,1,2,3,4,5,6,7,8,9,10,11] {
                if i < ROWS && i < t.mr {
                    let cr = t.c.add(i * t.ldc);
                    let mut x0 = acc[2 * i];
                    if t.load_c {
                        x0 = _mm512_add_ps(x0, _mm512_maskz_loadu_ps(m0, cr));
                    }
                    _mm512_mask_storeu_ps(cr, m0, x0);
                    if NV == 2 {
                        let mut x1 = acc[2 * i + 1];
                        if t.load_c {
                            x1 = _mm512_add_ps(x1, _mm512_maskz_loadu_ps(m1, cr.add(16)));
                        }
                        _mm512_mask_storeu_ps(cr.add(16), m1, x1);
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signature shared by [`sgemm`] and [`fallback`].
    type Gemm = unsafe fn(
        usize,
        usize,
        usize,
        *const f32,
        usize,
        usize,
        *const f32,
        usize,
        usize,
        *mut f32,
        usize,
        bool,
    );

    /// Calls `f` on slices after checking that every element it will touch is in bounds.
    fn run(
        f: Gemm,
        (m, n, k): (usize, usize, usize),
        (a, a_rs, a_cs): (&[f32], usize, usize),
        (b, b_rs, b_cs): (&[f32], usize, usize),
        c: &mut [f32],
        ldc: usize,
        acc: bool,
    ) {
        if m > 0 && n > 0 {
            assert!(k == 0 || (m - 1) * a_rs + (k - 1) * a_cs < a.len());
            assert!(k == 0 || (k - 1) * b_rs + (n - 1) * b_cs < b.len());
            assert!((m - 1) * ldc + n <= c.len());
        }
        // SAFETY: bounds checked above; c is a distinct &mut, so it aliases neither a nor b.
        unsafe {
            f(
                m,
                n,
                k,
                a.as_ptr(),
                a_rs,
                a_cs,
                b.as_ptr(),
                b_rs,
                b_cs,
                c.as_mut_ptr(),
                ldc,
                acc,
            )
        }
    }

    /// Deterministic pseudo-random values in [-1, 1) so tests need no dependencies.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
        fn vec(&mut self, len: usize) -> Vec<f32> {
            (0..len).map(|_| self.next()).collect()
        }
    }

    #[derive(Clone, Copy, Debug)]
    struct Case {
        m: usize,
        n: usize,
        k: usize,
        a_t: bool,
        b_t: bool,
        pad: usize,
        acc: bool,
    }

    fn check(cs: Case, rng: &mut Rng) {
        let Case {
            m,
            n,
            k,
            a_t,
            b_t,
            pad,
            acc,
        } = cs;
        let (a_rs, a_cs) = if a_t { (1, m) } else { (k, 1) };
        let (b_rs, b_cs) = if b_t { (1, k) } else { (n, 1) };
        let a = rng.vec((m * k).max(1));
        let b = rng.vec((k * n).max(1));
        let ldc = n + pad;
        let c0 = rng.vec(m * ldc);
        let mut c = c0.clone();
        run(
            sgemm,
            (m, n, k),
            (&a, a_rs, a_cs),
            (&b, b_rs, b_cs),
            &mut c,
            ldc,
            acc,
        );
        let tol = 1e-5 * (k.max(1) as f64).sqrt();
        for i in 0..m {
            for j in 0..ldc {
                let got = c[i * ldc + j] as f64;
                if j >= n {
                    assert_eq!(
                        got,
                        c0[i * ldc + j] as f64,
                        "padding touched {cs:?} ({i},{j})"
                    );
                    continue;
                }
                let mut want = if acc { c0[i * ldc + j] as f64 } else { 0.0 };
                for p in 0..k {
                    want += a[i * a_rs + p * a_cs] as f64 * b[p * b_rs + j * b_cs] as f64;
                }
                let err = (got - want).abs();
                assert!(
                    err <= tol * (1.0 + want.abs()),
                    "{cs:?} ({i},{j}) got {got} want {want}"
                );
            }
        }
    }

    const SIZES: [usize; 13] = [1, 5, 11, 12, 13, 31, 32, 33, 64, 100, 257, 300, 600];

    #[test]
    fn small_shapes_all_layouts() {
        let mut rng = Rng(1);
        let small = [1, 5, 11, 12, 13, 31, 32, 33];
        for &m in &small {
            for &n in &small {
                for &k in &[0, 1, 5, 17, 33] {
                    for flags in 0..8 {
                        let cs = Case {
                            m,
                            n,
                            k,
                            a_t: flags & 1 != 0,
                            b_t: flags & 2 != 0,
                            pad: if flags & 4 != 0 { 3 } else { 0 },
                            acc: (m + n + k + flags) % 2 == 0,
                        };
                        check(cs, &mut rng);
                    }
                }
            }
        }
    }

    #[test]
    fn random_shapes() {
        let mut rng = Rng(42);
        let mut pick = Rng(7);
        let idx =
            |r: &mut Rng| ((r.next() + 1.0) * 0.5 * SIZES.len() as f32) as usize % SIZES.len();
        for t in 0..60 {
            let cs = Case {
                m: SIZES[idx(&mut pick)],
                n: SIZES[idx(&mut pick)],
                k: SIZES[idx(&mut pick)],
                a_t: t % 2 == 1,
                b_t: t % 3 == 1,
                pad: if t % 4 == 0 { 7 } else { 0 },
                acc: t % 5 < 2,
            };
            check(cs, &mut rng);
        }
    }

    #[test]
    fn large_blocks_cross_boundaries() {
        // Exceed KC, MC and NC so every blocking loop runs more than once.
        let mut rng = Rng(3);
        for &(m, n, k, a_t, b_t) in &[
            (257, 3100, 300, false, false),
            (600, 33, 600, true, false),
            (13, 600, 257, false, true),
            (300, 100, 600, true, true),
        ] {
            for acc in [false, true] {
                check(
                    Case {
                        m,
                        n,
                        k,
                        a_t,
                        b_t,
                        pad: 5,
                        acc,
                    },
                    &mut rng,
                );
            }
        }
    }

    /// A packed once and read per segment, or packed a block at a time by a fill (rows
    /// counted from row 0, each GEMM starting at its segment's row), gives the bits of packing
    /// it inside each GEMM: segments shorter than, equal to and longer than a panel or a row
    /// block (up to more rows than one A block), tails of every panel height, several depth
    /// blocks, and a transposed source.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn packed_and_filled_a_equal_the_strided_gemm() {
        if !has_fast_path() {
            eprintln!("no AVX-512: packed A does not exist here");
            return;
        }
        let mut rng = Rng(21);
        for &(m, n, k, segment, a_t) in &[
            (64, 70, 576, 64, false),
            (64, 70, 576, 32, true),
            (512, 40, 600, 256, false),
            (29, 33, 9, 7, false),
            (300, 65, 257, 300, true),
            (250, 17, 513, 124, false),
            (5, 3, 1, 16, true),
        ] {
            let (a_rs, a_cs) = if a_t { (1, m) } else { (k, 1) };
            let a = rng.vec(m * k);
            let b = rng.vec(k * n);
            let packed = PackedA::new(m, k, segment, &a, a_rs, a_cs).expect("fast path");
            let fill = |spot: PanelSpot, dst: &mut [MaybeUninit<f32>]| {
                for (p, row) in dst.chunks_exact_mut(spot.height).enumerate() {
                    for (i, d) in row.iter_mut().enumerate() {
                        let at = (spot.row0 + i) * a_rs + (spot.pc + p) * a_cs;
                        d.write(if i < spot.rows { a[at] } else { 0.0 });
                    }
                }
            };
            let b_src = avx512::Strided {
                b: b.as_ptr(),
                b_rs: n,
                b_cs: 1,
            };
            for (acc, filled) in [(false, false), (true, false), (false, true), (true, true)] {
                let c0 = rng.vec(m * n);
                let mut want = c0.clone();
                run(
                    sgemm,
                    (m, n, k),
                    (&a, a_rs, a_cs),
                    (&b, n, 1),
                    &mut want,
                    n,
                    acc,
                );
                let mut got = c0.clone();
                for m0 in (0..m).step_by(segment) {
                    let rows = segment.min(m - m0);
                    let c = got[m0 * n..].as_mut_ptr();
                    // SAFETY: rows m0.. of the m x n C are in bounds; B is k x n; the fill
                    // writes every value of its panel.
                    let done = unsafe {
                        if filled {
                            sgemm_filled_a(rows, n, k, (&fill, m0), &b_src, c, n, acc)
                        } else {
                            sgemm_packed_ab(rows, n, k, (&packed, m0), &b_src, c, n, acc)
                        }
                    };
                    assert!(done);
                }
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(g, w)| g.to_bits() == w.to_bits());
                assert!(
                    same,
                    "m {m} n {n} k {k} segment {segment} transposed {a_t} acc {acc} filled {filled}"
                );
            }
        }
    }

    #[test]
    fn general_strides_and_k0() {
        let mut rng = Rng(9);
        // Non-unit strides on both dims of A and B take the scalar packing path.
        let (m, n, k) = (13, 37, 19);
        let a = rng.vec(m * k * 6);
        let b = rng.vec(k * n * 6);
        let (a_rs, a_cs, b_rs, b_cs) = (2, 2 * m, 3 * n, 2);
        let ldc = n + 1;
        let mut c = vec![0.5; m * ldc];
        run(
            sgemm,
            (m, n, k),
            (&a, a_rs, a_cs),
            (&b, b_rs, b_cs),
            &mut c,
            ldc,
            true,
        );
        for i in 0..m {
            for j in 0..n {
                let mut want = 0.5f64;
                for p in 0..k {
                    want += a[i * a_rs + p * a_cs] as f64 * b[p * b_rs + j * b_cs] as f64;
                }
                assert!((c[i * ldc + j] as f64 - want).abs() < 1e-4);
            }
        }
        // k == 0 without accumulate zeroes C (and leaves padding alone).
        let mut c = vec![3.0; 4 * 6];
        run(sgemm, (4, 5, 0), (&a, 1, 1), (&b, 1, 1), &mut c, 6, false);
        for i in 0..4 {
            assert!(c[i * 6..i * 6 + 5].iter().all(|&x| x == 0.0));
            assert_eq!(c[i * 6 + 5], 3.0);
        }
        // k == 0 with accumulate leaves C untouched.
        let mut c = vec![3.0; 4 * 6];
        run(sgemm, (4, 5, 0), (&a, 1, 1), (&b, 1, 1), &mut c, 6, true);
        assert!(c.iter().all(|&x| x == 3.0));
    }

    #[test]
    fn fallback_matches() {
        let mut rng = Rng(11);
        for &(m, n, k, t) in &[
            (13, 33, 17, false),
            (31, 600, 129, true),
            (5, 1, 300, false),
        ] {
            let (a_rs, a_cs) = if t { (1, m) } else { (k, 1) };
            let (b_rs, b_cs) = if t { (1, k) } else { (n, 1) };
            let a = rng.vec(m * k);
            let b = rng.vec(k * n);
            let c0 = rng.vec(m * n);
            let mut c1 = c0.clone();
            let mut c2 = c0.clone();
            run(
                fallback,
                (m, n, k),
                (&a, a_rs, a_cs),
                (&b, b_rs, b_cs),
                &mut c1,
                n,
                true,
            );
            run(
                sgemm,
                (m, n, k),
                (&a, a_rs, a_cs),
                (&b, b_rs, b_cs),
                &mut c2,
                n,
                true,
            );
            for (x, y) in c1.iter().zip(&c2) {
                assert!((x - y).abs() < 1e-3, "{x} vs {y}");
            }
        }
    }

    /// A row-major k x n matrix whose panels are packed ahead, in full depth, and handed to the
    /// GEMM in place ([`PackB::packed`]).
    struct KeptPanels {
        panels: Vec<f32>,
        k: usize,
    }

    impl KeptPanels {
        fn new(b: &[f32], k: usize, n: usize) -> Self {
            let count = n.div_ceil(NR);
            let mut panels = vec![0.0; count * k * NR];
            for q in 0..count {
                for p in 0..k {
                    for jj in 0..NR.min(n - q * NR) {
                        panels[(q * k + p) * NR + jj] = b[p * n + q * NR + jj];
                    }
                }
            }
            Self { panels, k }
        }
    }

    impl PackB for KeptPanels {
        unsafe fn pack(&self, _pc: usize, _kc: usize, _j: usize, _nr: usize, _dst: *mut f32) {
            unreachable!("every panel is kept packed");
        }

        unsafe fn packed(&self, pc: usize, j: usize) -> Option<*const f32> {
            Some(self.panels[(j / NR * self.k + pc) * NR..].as_ptr())
        }
    }

    /// Panels read in place give the bits of panels packed by the GEMM, on both blocking paths
    /// (m within and beyond MC) with several depth blocks and column blocks (n > NC).
    #[test]
    fn kept_panels_are_read_in_place() {
        if !has_fast_path() {
            eprintln!("no AVX-512: no packed-B path here");
            return;
        }
        for (m, n, k) in [(100, 70, 300), (MC + 17, NC + 45, KC + 33), (5, 33, 17)] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7919) % 1013) as f32 / 500.0 - 1.0)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 3571) % 1009) as f32 / 450.0 - 1.1)
                .collect();
            let mut want = vec![0.0; m * n];
            run(
                sgemm,
                (m, n, k),
                (&a, k, 1),
                (&b, n, 1),
                &mut want,
                n,
                false,
            );
            let kept = KeptPanels::new(&b, k, n);
            let mut got = vec![f32::NAN; m * n];
            // SAFETY: A is m x k row-major, C m x n; every panel of the k x n extent is kept.
            let done = unsafe {
                sgemm_packed_b(m, n, k, a.as_ptr(), k, 1, &kept, got.as_mut_ptr(), n, false)
            };
            assert!(done);
            let same = got
                .iter()
                .zip(&want)
                .all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "{m}x{n}x{k}: panels read in place differ");
        }
    }
}
