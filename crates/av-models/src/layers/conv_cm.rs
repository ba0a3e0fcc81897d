//! 3-D convolution on channel-major (C, B, T, H, W) tensors as one CPU custom op.
//!
//! In the usual (B, C, T, H, W) layout every factored R(2+1)D convolution needs permutes
//! between the (B*T, C, H, W) frame layout and NCTHW, a full im2col copy kept alive for the
//! backward pass, and a transpose of the GEMM result; on CPU that memory traffic, not the
//! arithmetic, dominated a training step. With the channel axis first, a GEMM of the
//! (O, C*kt*kh*kw) weight with the patch matrix yields the next layer's input directly, so
//! this op does no layout work at all. It never keeps a patch matrix for the backward pass:
//! the GEMMs pack patches a few output rows at a time (only a small map's, a few MB, is packed
//! whole, once for all threads), and the backward pass packs them again (cheaper than keeping
//! GBs alive).
//!
//! Work is split across rayon threads by batch item and output rows; the input gradient is
//! split by batch item only, because the taps of neighbouring rows overlap in the input.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::bn_fused::slice;
use super::par_vec::{par_init, par_zeros};
use super::sgemm::{PackedA, PANEL_WIDTH};
use super::simd::dispatch;

/// Name of the op in errors.
const OP: &str = "conv3d-channel-major";

/// Geometry of a channel-major 3-D convolution, in PyTorch's (t, h, w) order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmGeometry {
    /// Kernel (kt, kh, kw).
    pub kernel: [usize; 3],
    /// Stride (st, sh, sw).
    pub stride: [usize; 3],
    /// Zero padding (pt, ph, pw) before the first element of each axis.
    pub pad: [usize; 3],
}

impl From<super::Conv3dConfig> for CmGeometry {
    fn from(c: super::Conv3dConfig) -> Self {
        Self {
            kernel: c.kernel,
            stride: c.stride,
            pad: c.padding,
        }
    }
}

/// All sizes of one convolution call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    /// Input (C, B, T, H, W).
    c: usize,
    b: usize,
    t: usize,
    h: usize,
    w: usize,
    /// Output channels.
    o: usize,
    /// Output (T', H', W').
    to: usize,
    ho: usize,
    wo: usize,
    g: CmGeometry,
}

impl Sizes {
    /// Sizes of a convolution of a channel-major (C, B, T, H, W) input into `o` channels, or
    /// `None` when the input is smaller than the (padded) kernel.
    pub(crate) fn new(input: [usize; 5], o: usize, g: CmGeometry) -> Option<Self> {
        let [c, b, t, h, w] = input;
        let out = |i: usize| super::ops::out_len(input[i + 2], g.kernel[i], g.stride[i], g.pad[i]);
        Some(Self {
            c,
            b,
            t,
            h,
            w,
            o,
            to: out(0)?,
            ho: out(1)?,
            wo: out(2)?,
            g,
        })
    }

    /// Output (O, B, T', H', W').
    pub(crate) fn out_dims(&self) -> [usize; 5] {
        [self.o, self.b, self.to, self.ho, self.wo]
    }

    /// The convolution whose forward pass is this one's input gradient, when there is one of
    /// the same kind: for stride 1 the gradient is the output gradient convolved with the
    /// flipped, transposed kernel under padding k - 1 - p, which gives back the input size.
    pub(crate) fn transposed(&self) -> Option<Self> {
        if self.g.stride != [1, 1, 1] || (0..3).any(|i| self.g.pad[i] >= self.g.kernel[i]) {
            return None;
        }
        let g = CmGeometry {
            kernel: self.g.kernel,
            stride: [1, 1, 1],
            pad: std::array::from_fn(|i| self.g.kernel[i] - 1 - self.g.pad[i]),
        };
        let t = Self::new(self.out_dims(), self.c, g)?;
        (t.out_dims() == [self.c, self.b, self.t, self.h, self.w]).then_some(t)
    }

    /// Elements of the weight.
    pub(crate) fn weight_len(&self) -> usize {
        self.o * self.k()
    }

    /// Rows of the patch matrix: C * kt * kh * kw (the weight's fan-in).
    fn k(&self) -> usize {
        self.c * self.g.kernel.iter().product::<usize>()
    }

    /// Output rows (t', h') per batch item; each row holds W' columns.
    fn rows_per_item(&self) -> usize {
        self.to * self.ho
    }

    /// Columns of the whole output matrix: B * T' * H' * W'.
    fn cols(&self) -> usize {
        self.b * self.rows_per_item() * self.wo
    }

    /// Columns per work chunk: enough for an efficient GEMM, few enough that the patch buffer
    /// stays in L2.
    fn target_cols(&self) -> usize {
        (256 * 1024 / self.k().max(1)).clamp(128, 1024)
    }

    /// Whether the map is small: its `tasks` (from [`Sizes::tasks`]) are a few chunks of whole
    /// batch items, too few to keep every thread busy (the deep layers).
    fn small_map(&self, tasks: &[Vec<Chunk>]) -> bool {
        few(tasks.len()) && tasks.iter().flatten().all(|c| c.whole_items(self))
    }

    /// The column chunks, grouped into tasks whose input-gradient scatters never overlap: all
    /// row chunks of one batch item form one task (neighbouring rows share input rows), and a
    /// chunk of several whole items is a task of its own.
    fn tasks(&self) -> Vec<Vec<Chunk>> {
        let rows = self.rows_per_item();
        let target = self.target_cols();
        if rows * self.wo >= target {
            let rc = target.div_ceil(self.wo.max(1)).clamp(1, rows.max(1));
            (0..self.b)
                .map(|b| {
                    (0..rows)
                        .step_by(rc)
                        .map(|r0| Chunk {
                            b0: b,
                            items: 1,
                            r0,
                            nrows: rc.min(rows - r0),
                        })
                        .collect()
                })
                .collect()
        } else {
            // Small maps (deep layers): several whole items per chunk.
            let per = (target / (rows * self.wo).max(1)).max(1);
            (0..self.b)
                .step_by(per)
                .map(|b0| {
                    vec![Chunk {
                        b0,
                        items: per.min(self.b - b0),
                        r0: 0,
                        nrows: rows,
                    }]
                })
                .collect()
        }
    }
}

/// Output rows `r0..r0 + nrows` of each of the batch items `b0..b0 + items` (several items only
/// with whole rows), whose columns are contiguous in the output matrix.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chunk {
    b0: usize,
    items: usize,
    r0: usize,
    nrows: usize,
}

impl Chunk {
    /// First output column.
    fn col_start(&self, s: &Sizes) -> usize {
        (self.b0 * s.rows_per_item() + self.r0) * s.wo
    }

    /// Every output column: all rows of all batch items.
    fn all(s: &Sizes) -> Self {
        Self {
            b0: 0,
            items: s.b,
            r0: 0,
            nrows: s.rows_per_item(),
        }
    }

    /// Whether the chunk covers whole batch items.
    fn whole_items(&self, s: &Sizes) -> bool {
        self.r0 == 0 && self.nrows == s.rows_per_item()
    }

    /// Number of output columns.
    fn ncols(&self, s: &Sizes) -> usize {
        self.items * self.nrows * s.wo
    }

    /// Fills `cols` (K x ncols) with the chunk's patches.
    /// With `parallel`, channel groups are gathered on all threads (their patch rows are
    /// disjoint); the caller asks for it when chunks are too few to keep the threads busy.
    fn gather<T: ConvElem>(&self, x: &[T], s: &Sizes, cols: &mut [T], parallel: bool) {
        let n = self.ncols(s);
        let run = |chans: std::ops::Range<usize>, cols: &mut [T]| {
            for i in 0..self.items {
                let off = i * self.nrows * s.wo;
                let rows = (self.r0, self.nrows);
                gather(x, s, self.b0 + i, rows, chans.clone(), cols, n, off);
            }
        };
        if !parallel || s.k() * n == 0 {
            return run(0..s.c, cols);
        }
        let per = channels_per_group(s);
        let rows_per_channel = s.k() / s.c.max(1) * n;
        cols[..s.k() * n]
            .par_chunks_mut(per * rows_per_channel)
            .enumerate()
            .for_each(|(g, cols)| run(g * per..((g + 1) * per).min(s.c), cols));
    }

    /// Adds the patch gradients `cols` (K x ncols) into `dx` (`dx_len` elements); with
    /// `parallel`, channel groups on all threads (each writes only its channels' part of `dx`).
    fn scatter<T: ConvElem>(
        &self,
        cols: &[T],
        s: &Sizes,
        (dx, dx_len): (SharedMut<T>, usize),
        parallel: bool,
    ) {
        let n = self.ncols(s);
        let run = |chans: std::ops::Range<usize>, cols: &[T]| {
            for i in 0..self.items {
                let off = i * self.nrows * s.wo;
                let rows = (self.r0, self.nrows);
                scatter(
                    cols,
                    s,
                    self.b0 + i,
                    rows,
                    chans.clone(),
                    dx,
                    dx_len,
                    n,
                    off,
                );
            }
        };
        if !parallel || s.k() * n == 0 {
            return run(0..s.c, cols);
        }
        let per = channels_per_group(s);
        let rows_per_channel = s.k() / s.c.max(1) * n;
        cols[..s.k() * n]
            .par_chunks(per * rows_per_channel)
            .enumerate()
            .for_each(|(g, cols)| run(g * per..((g + 1) * per).min(s.c), cols));
    }
}

/// Input channels per parallel gather/scatter group: a few groups per thread for balance.
fn channels_per_group(s: &Sizes) -> usize {
    s.c.div_ceil(4 * rayon::current_num_threads().max(1)).max(1)
}

/// The input an implicit GEMM packs its patches from: `x` itself, its W rows split into stride
/// phases ([`phase_split`]) or its stride-phase planes ([`phase_planes`]).
#[derive(Clone, Copy)]
pub(crate) struct PatchInput<'a, T> {
    data: &'a [T],
    layout: InputLayout,
}

/// How a [`PatchInput`] holds the convolution's input.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum InputLayout {
    /// As it is: (C, B, T, H, W).
    Plain,
    /// Every W row split into its stride phases (columns 0, s, 2s, ... then 1, 1 + s, ...), so
    /// a strided convolution's patch runs are contiguous loads instead of gathers.
    RowPhases,
    /// Per channel, one plane in the output's (B, T', H', W') layout per stride phase the taps
    /// read, so that every tap of a strided convolution reads one plane shifted by a constant,
    /// as a stride-1 convolution reads its input.
    Planes,
}

impl<'a, T> PatchInput<'a, T> {
    /// `x` as it is.
    fn plain(data: &'a [T]) -> Self {
        Self {
            data,
            layout: InputLayout::Plain,
        }
    }

    /// The copy of `x` (and its layout) when there is one, else `x`.
    fn of(x: &'a [T], copy: Option<&'a (Vec<T>, InputLayout)>) -> Self {
        match copy {
            Some((data, layout)) => Self {
                data,
                layout: *layout,
            },
            None => Self::plain(x),
        }
    }
}

/// The copy of `x` a strided convolution packs its patches from: stride-phase planes where
/// [`planes_apply`], else W rows split into phases; `None` without a W stride.
fn patch_copy<T: ConvElem>(x: &[T], s: &Sizes) -> Option<(Vec<T>, InputLayout)> {
    if planes_apply(s) {
        return Some((phase_planes(x, s), InputLayout::Planes));
    }
    phase_split(x, s).map(|v| (v, InputLayout::RowPhases))
}

/// Whether a convolution packs its patches from stride-phase planes: strided along W (so it
/// copies its input anyway: a stride along T or H only reads whole rows in place), with enough
/// input channels for the indexed panels (see `IndexedPanels::new`), and every output axis
/// holding exactly ceil(input / stride) positions, the size of a phase plane (every odd kernel
/// with "same" padding, and every pointwise kernel, qualifies).
fn planes_apply(s: &Sizes) -> bool {
    let input = [s.t, s.h, s.w];
    let output = [s.to, s.ho, s.wo];
    s.g.stride[2] > 1
        && s.c >= MIN_INDEXED_CHANNELS
        && (0..3).all(|d| input[d].div_ceil(s.g.stride[d]) == output[d])
}

/// Fewest input channels for which the indexed panels pay: their table, built per chunk,
/// panel and tap, serves each of the C patch rows of a tap.
const MIN_INDEXED_CHANNELS: usize = 8;

/// Per axis (T, H, W), the stride phases `(i - pad) mod stride` that the kernel's taps i read,
/// ascending: the planes [`phase_planes`] keeps (a pointwise stride-2 kernel reads only phase 0).
fn used_phases(s: &Sizes) -> [Vec<usize>; 3] {
    std::array::from_fn(|d| {
        let (k, st, p) = (s.g.kernel[d], s.g.stride[d], s.g.pad[d]);
        let mut r: Vec<usize> = (0..k)
            .map(|i| (i as isize - p as isize).rem_euclid(st as isize) as usize)
            .collect();
        r.sort_unstable();
        r.dedup();
        r
    })
}

/// Where tap (i, j, l) reads in [`phase_planes`]: its plane's index among the kept phases and
/// its offset (in output positions) from the output position, per tap in weight order.
fn plane_shifts(s: &Sizes) -> Vec<(usize, isize)> {
    let used = used_phases(s);
    let [kt, kh, kw] = s.g.kernel;
    // (index of the tap's phase among the kept ones, shift in phase-plane positions).
    let axis = |d: usize, i: usize| {
        let v = i as isize - s.g.pad[d] as isize;
        let st = s.g.stride[d] as isize;
        let r = v.rem_euclid(st) as usize;
        let at = used[d].iter().position(|&u| u == r).expect("a kept phase");
        (at, v.div_euclid(st))
    };
    let (ho, wo) = (s.ho as isize, s.wo as isize);
    let mut out = Vec::with_capacity(kt * kh * kw);
    for i in 0..kt {
        let (pt, dt) = axis(0, i);
        for j in 0..kh {
            let (ph, dh) = axis(1, j);
            for l in 0..kw {
                let (pw, dw) = axis(2, l);
                let phase = (pt * used[1].len() + ph) * used[2].len() + pw;
                out.push((phase, (dt * ho + dh) * wo + dw));
            }
        }
    }
    out
}

/// `x` (C, B, T, H, W) as stride-phase planes: per channel and kept phase (rt, rh, rw) (see
/// [`used_phases`]), a (B, T', H', W') plane whose position (b, t, h, w) holds
/// x[b, st t + rt, sh h + rh, sw w + rw], zero past the input's end. Needs [`planes_apply`].
fn phase_planes<T: ConvElem>(x: &[T], s: &Sizes) -> Vec<T> {
    assert!(
        planes_apply(s),
        "phase planes need a stride whose phases fit the output"
    );
    assert_eq!(x.len(), s.c * s.b * s.t * s.h * s.w, "conv input size");
    if let Some(planes) = T::phase_planes_fast(x, s) {
        return planes;
    }
    let used = used_phases(s);
    let phases = used.iter().map(Vec::len).product::<usize>();
    let [st, sh, sw] = s.g.stride;
    let plane = s.b * s.to * s.ho * s.wo;
    // Pieces of whole planes, about 64 Ki values each.
    let planes_per_piece = ((1 << 16) / plane.max(1)).max(1);
    // SAFETY: pieces are whole planes (the buffer is C x phases of them), and every row of
    // every plane is written in full: W' copied or zeroed values.
    unsafe {
        par_init(
            s.c * phases * plane,
            planes_per_piece * plane,
            |piece, dst| {
                for (i, d) in dst.chunks_exact_mut(plane).enumerate() {
                    let at = piece * planes_per_piece + i;
                    let (c, ph) = (at / phases, at % phases);
                    let rw = used[2][ph % used[2].len()];
                    let rh = used[1][ph / used[2].len() % used[1].len()];
                    let rt = used[0][ph / (used[2].len() * used[1].len())];
                    // Columns rw, rw + sw, ... of an input row, then zeros.
                    let n = s.w.saturating_sub(rw).div_ceil(sw).min(s.wo);
                    let mut rows = d.chunks_exact_mut(s.wo);
                    for b in 0..s.b {
                        for to in 0..s.to {
                            for ho in 0..s.ho {
                                let row = rows.next().expect("a plane holds B T' H' rows");
                                let (t, h) = (st * to + rt, sh * ho + rh);
                                if t >= s.t || h >= s.h || n == 0 {
                                    row.iter_mut().for_each(|v| {
                                        v.write(T::default());
                                    });
                                    continue;
                                }
                                let first = (((c * s.b + b) * s.t + t) * s.h + h) * s.w + rw;
                                let src = &x[first..=first + (n - 1) * sw];
                                T::gather_strided(src, sw, &mut row[..n]);
                                row[n..].iter_mut().for_each(|v| {
                                    v.write(T::default());
                                });
                            }
                        }
                    }
                }
            },
        )
    }
}

/// The input gradient (C, B, T, H, W) from its stride-phase planes `dxp` (the inverse of
/// [`phase_planes`] on the positions some tap reads; the others, which no output depends on,
/// get zero).
fn from_phase_planes<T: ConvElem>(dxp: &[T], s: &Sizes) -> Vec<T> {
    let used = used_phases(s);
    let phases = used.iter().map(Vec::len).product::<usize>();
    let plane = s.b * s.to * s.ho * s.wo;
    assert_eq!(dxp.len(), s.c * phases * plane, "phase planes size");
    if let Some(dx) = T::from_phase_planes_fast(dxp, s) {
        return dx;
    }
    let [st, sh, sw] = s.g.stride;
    // Kept phase index per residue (None: no tap reads that phase).
    let index = |d: usize, r: usize| used[d].iter().position(|&u| u == r);
    let (nh, nw) = (used[1].len(), used[2].len());
    let block = s.b * s.t * s.h * s.w;
    // SAFETY: pieces are whole channel blocks; every W row of each is written in full (each
    // column belongs to exactly one residue: copied from its plane, or zeroed).
    unsafe {
        par_init(s.c * block, block.max(1), |c, dst| {
            let mut rows = dst.chunks_exact_mut(s.w);
            for b in 0..s.b {
                for t in 0..s.t {
                    for h in 0..s.h {
                        let row = rows.next().expect("a block holds B T H rows");
                        let (it, ih) = (index(0, t % st), index(1, h % sh));
                        let (Some(it), Some(ih)) = (it, ih) else {
                            row.iter_mut().for_each(|v| {
                                v.write(T::default());
                            });
                            continue;
                        };
                        let at = |iw: usize| {
                            let ph = (it * nh + ih) * nw + iw;
                            (((c * phases + ph) * s.b + b) * s.to + t / st) * s.ho + h / sh
                        };
                        for rw in 0..sw.min(s.w) {
                            let n = (s.w - rw).div_ceil(sw);
                            match index(2, rw) {
                                Some(iw) => {
                                    let src = &dxp[at(iw) * s.wo..][..n];
                                    T::spread_strided(src, sw, &mut row[rw..]);
                                }
                                None => row[rw..].iter_mut().step_by(sw).for_each(|v| {
                                    v.write(T::default());
                                }),
                            }
                        }
                    }
                }
            }
        })
    }
}

/// dst[i * step] = src[i]: the portable [`ConvElem::spread_strided`].
#[inline(always)]
fn scatter_row_strided<T: Copy>(src: &[T], step: usize, dst: &mut [std::mem::MaybeUninit<T>]) {
    let n = src.len();
    assert!(
        n == 0 || (n - 1) * step < dst.len(),
        "strided copy out of bounds"
    );
    for (i, &v) in src.iter().enumerate() {
        dst[i * step].write(v);
    }
}

/// dst[i] = src[i * step]: the portable [`ConvElem::gather_strided`].
#[inline(always)]
fn strided_row<T: Copy>(src: &[T], step: usize, dst: &mut [std::mem::MaybeUninit<T>]) {
    let n = dst.len();
    assert!(
        n == 0 || (n - 1) * step < src.len(),
        "strided copy out of bounds"
    );
    for (i, d) in dst.iter_mut().enumerate() {
        d.write(src[i * step]);
    }
}

/// Offset of stride phase `q` within a phase-split row of `w` columns (phase q holds columns
/// q, q + sw, ...).
fn phase_start(w: usize, sw: usize, q: usize) -> usize {
    (0..q).map(|r| w.saturating_sub(r).div_ceil(sw)).sum()
}

/// `x` with every W row split into its `sw` stride phases, or `None` for stride 1.
fn phase_split<T: Copy + Default + Send + Sync>(x: &[T], s: &Sizes) -> Option<Vec<T>> {
    let (w, sw) = (s.w, s.g.stride[2]);
    if sw <= 1 || w == 0 {
        return None;
    }
    let starts: Vec<usize> = (0..sw).map(|q| phase_start(w, sw, q)).collect();
    // Pieces of whole rows, about 64 Ki values each.
    let rows_per_piece = ((1 << 16) / w).max(1);
    // SAFETY: phase q < min(sw, w) holds ceil((w - q) / sw) columns from `starts[q]` on, and
    // `starts` is the running sum of those counts, which add up to w: every element of every
    // (whole-row) piece is written.
    Some(unsafe {
        par_init(x.len(), rows_per_piece * w, |piece, dst| {
            let src = &x[piece * rows_per_piece * w..][..dst.len()];
            for (d, r) in dst.chunks_exact_mut(w).zip(src.chunks_exact(w)) {
                // One strided walk per phase: no division per element. Phases at or past the
                // row's end (a stride wider than the row) are empty.
                for (q, &start) in starts.iter().enumerate().take(w) {
                    for (o, &v) in d[start..].iter_mut().zip(r[q..].iter().step_by(sw)) {
                        o.write(v);
                    }
                }
            }
        })
    })
}

/// The weight operand (A, O x K) of a forward GEMM.
#[derive(Clone, Copy)]
pub(crate) enum Weights<'a, T> {
    /// Row-major: row i at `w[i * K..]`.
    Rows(&'a [T]),
    /// Packed once into the GEMM's micro-panels for every chunk and thread (f32 fast path).
    Packed(&'a PackedA),
    /// The input-gradient twin's weight of the convolution `of` ([`flip_transpose`]`(w, of)`),
    /// packed a block at a time straight from `w` (f32 fast path).
    Flipped { w: &'a [T], of: &'a Sizes },
}

/// An element type the op supports: f32 and f64, each with a GEMM.
pub(crate) trait ConvElem:
    Copy + Default + Send + Sync + std::ops::AddAssign + candle_core::WithDType + 'static
{
    /// dst[i] = src[i * step] (the strided taps of a strided convolution).
    fn copy_strided(src: &[Self], step: usize, dst: &mut [Self]);
    /// dst[i * step] += src[i] (the adjoint of [`ConvElem::copy_strided`]).
    fn add_strided(src: &[Self], step: usize, dst: &mut [Self]);
    /// C (m x ncols, row stride `ldc`) = rows `m0..m0 + m` of the weight (O x K) x the chunk's
    /// patches, with the patches packed straight from the input `x` (no patch matrix). A
    /// packed weight is read one whole segment at a time. Returns `false`, doing nothing, where
    /// the element type or CPU has no such path.
    #[allow(clippy::too_many_arguments)]
    fn gemm_patches(
        _m: usize,
        _a: (Weights<'_, Self>, usize),
        _x: PatchInput<'_, Self>,
        _s: &Sizes,
        _chunk: &Chunk,
        _c: *mut Self,
        _ldc: usize,
    ) -> bool {
        false
    }
    /// [`ConvElem::gemm_patches`] with the rows split across the rayon threads, sharing one
    /// packing of the patches.
    #[allow(clippy::too_many_arguments)]
    fn gemm_patches_rows_split(
        _m: usize,
        _a: Weights<'_, Self>,
        _x: PatchInput<'_, Self>,
        _s: &Sizes,
        _chunk: &Chunk,
        _c: *mut Self,
        _ldc: usize,
    ) -> bool {
        false
    }
    /// Columns `k0..k0 + nk` of dW (m x K, row stride K) += dY (m x ncols, row stride `ld`) x
    /// the chunk's patches^T (= instead of += unless `accumulate`), with the patches packed
    /// straight from `x`. Returns `false`, doing nothing, where the element type or CPU has no
    /// such path (`m == 0` only asks).
    #[allow(clippy::too_many_arguments)]
    fn gemm_dw_patches(
        _m: usize,
        _dy: (&[Self], usize),
        _x: PatchInput<'_, Self>,
        _s: &Sizes,
        _chunk: &Chunk,
        _dw: *mut Self,
        _cols: (usize, usize),
        _accumulate: bool,
    ) -> bool {
        false
    }
    /// Adds the chunk's patch gradients `dcols` (K x ncols) into `dxp`, the input gradient as
    /// stride-phase planes (the adjoint of packing patches from [`phase_planes`]; `planes` is
    /// that packing's input, for its layout), with `parallel`, channel groups on all threads.
    /// Returns `false`, doing nothing, where the element type or CPU has no such path.
    ///
    /// # Safety
    /// `dxp` must be valid for reads and writes of `planes.data.len()` values, and no other
    /// thread may touch the positions this chunk's patches read meanwhile.
    unsafe fn scatter_planes(
        _dcols: &[Self],
        _planes: PatchInput<'_, Self>,
        _s: &Sizes,
        _chunk: &Chunk,
        _dxp: *mut Self,
        _parallel: bool,
    ) -> bool {
        false
    }
    /// The forward weight (O x K) of `s` packed once for every chunk's GEMM, in segments of
    /// `segment` rows, where this type and CPU read packed weights: `w` itself, or with
    /// `flip_of` the weight of that convolution's input-gradient twin ([`flip_transpose`] of
    /// `w`), packed straight from `w`.
    fn pack_weights(
        _w: &[Self],
        _s: &Sizes,
        _flip_of: Option<&Sizes>,
        _segment: usize,
    ) -> Option<PackedA> {
        None
    }
    /// [`phase_planes`] by a faster path where one exists for this type, geometry and CPU.
    fn phase_planes_fast(_x: &[Self], _s: &Sizes) -> Option<Vec<Self>> {
        None
    }
    /// [`from_phase_planes`] by a faster path where one exists for this type, geometry and CPU.
    fn from_phase_planes_fast(_dxp: &[Self], _s: &Sizes) -> Option<Vec<Self>> {
        None
    }
    /// dst[i] = src[i * step], into fresh memory (rows of [`phase_planes`]).
    fn gather_strided(src: &[Self], step: usize, dst: &mut [std::mem::MaybeUninit<Self>]) {
        strided_row(src, step, dst)
    }
    /// dst[i * step] = src[i], into fresh memory, leaving the other slots as they are (rows
    /// of [`from_phase_planes`]).
    fn spread_strided(src: &[Self], step: usize, dst: &mut [std::mem::MaybeUninit<Self>]) {
        scatter_row_strided(src, step, dst)
    }
    /// C (m x n, row stride `ldc`) = or += A (m x k) B (k x n) with arbitrary strides.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        m: usize,
        n: usize,
        k: usize,
        a: (&[Self], usize, usize),
        b: (&[Self], usize, usize),
        c: *mut Self,
        ldc: usize,
        accumulate: bool,
    );
}

/// Plain strided loops, written with indices so the vectoriser sees interleaved accesses.
#[inline(always)]
fn copy_strided_body<T: Copy>(src: &[T], step: usize, dst: &mut [T]) {
    let n = dst.len();
    assert!(
        n == 0 || (n - 1) * step < src.len(),
        "strided copy out of bounds"
    );
    if step == 2 {
        for i in 0..n {
            dst[i] = src[2 * i];
        }
    } else {
        for i in 0..n {
            dst[i] = src[i * step];
        }
    }
}

#[inline(always)]
fn add_strided_body<T: Copy + std::ops::AddAssign>(src: &[T], step: usize, dst: &mut [T]) {
    let n = src.len();
    assert!(
        n == 0 || (n - 1) * step < dst.len(),
        "strided add out of bounds"
    );
    if step == 2 {
        for i in 0..n {
            dst[2 * i] += src[i];
        }
    } else {
        for i in 0..n {
            dst[i * step] += src[i];
        }
    }
}

#[inline(always)]
fn copy_strided_f32_body(src: &[f32], step: usize, dst: &mut [f32]) {
    copy_strided_body(src, step, dst)
}

#[inline(always)]
fn add_strided_f32_body(src: &[f32], step: usize, dst: &mut [f32]) {
    add_strided_body(src, step, dst)
}

dispatch! {
    fn copy_strided_f32(src: &[f32], step: usize, dst: &mut [f32]) -> () => copy_strided_f32_body
}
dispatch! {
    fn add_strided_f32(src: &[f32], step: usize, dst: &mut [f32]) -> () => add_strided_f32_body
}

macro_rules! impl_conv_elem {
    ($t:ty, $copy:path, $add:path $(, $patches:ident)?) => {
        impl ConvElem for $t {
            $(
            fn gemm_patches(
                m: usize,
                a: (Weights<'_, Self>, usize),
                x: PatchInput<'_, Self>,
                s: &Sizes,
                chunk: &Chunk,
                c: *mut Self,
                ldc: usize,
            ) -> bool {
                $patches::gemm(m, a, x, s, chunk, c, ldc)
            }

            fn pack_weights(
                w: &[Self],
                s: &Sizes,
                flip_of: Option<&Sizes>,
                segment: usize,
            ) -> Option<PackedA> {
                $patches::pack_weights(w, s, flip_of, segment)
            }

            fn gemm_patches_rows_split(
                m: usize,
                a: Weights<'_, Self>,
                x: PatchInput<'_, Self>,
                s: &Sizes,
                chunk: &Chunk,
                c: *mut Self,
                ldc: usize,
            ) -> bool {
                $patches::gemm_rows_split(m, a, x, s, chunk, c, ldc)
            }

            fn phase_planes_fast(x: &[Self], s: &Sizes) -> Option<Vec<Self>> {
                $patches::split_2x2(x, s)
            }

            fn from_phase_planes_fast(dxp: &[Self], s: &Sizes) -> Option<Vec<Self>> {
                $patches::merge_2x2(dxp, s)
            }

            fn gather_strided(
                src: &[Self],
                step: usize,
                dst: &mut [std::mem::MaybeUninit<Self>],
            ) {
                $patches::gather_strided(src, step, dst)
            }

            fn spread_strided(
                src: &[Self],
                step: usize,
                dst: &mut [std::mem::MaybeUninit<Self>],
            ) {
                $patches::spread_strided(src, step, dst)
            }

            unsafe fn scatter_planes(
                dcols: &[Self],
                planes: PatchInput<'_, Self>,
                s: &Sizes,
                chunk: &Chunk,
                dxp: *mut Self,
                parallel: bool,
            ) -> bool {
                // SAFETY: the caller's contract.
                unsafe { $patches::scatter_planes(dcols, planes, s, chunk, dxp, parallel) }
            }

            fn gemm_dw_patches(
                m: usize,
                dy: (&[Self], usize),
                x: PatchInput<'_, Self>,
                s: &Sizes,
                chunk: &Chunk,
                dw: *mut Self,
                cols: (usize, usize),
                accumulate: bool,
            ) -> bool {
                $patches::gemm_dw(m, dy, x, s, chunk, dw, cols, accumulate)
            }
            )?

            fn copy_strided(src: &[Self], step: usize, dst: &mut [Self]) {
                $copy(src, step, dst)
            }

            fn add_strided(src: &[Self], step: usize, dst: &mut [Self]) {
                $add(src, step, dst)
            }

            fn gemm(
                m: usize,
                n: usize,
                k: usize,
                (a, a_rs, a_cs): (&[Self], usize, usize),
                (b, b_rs, b_cs): (&[Self], usize, usize),
                c: *mut Self,
                ldc: usize,
                accumulate: bool,
            ) {
                if m == 0 || n == 0 {
                    return;
                }
                // Release-mode checks: the GEMM reads through raw pointers.
                assert!(
                    k == 0 || (m - 1) * a_rs + (k - 1) * a_cs < a.len(),
                    "GEMM: A out of bounds"
                );
                assert!(
                    k == 0 || (k - 1) * b_rs + (n - 1) * b_cs < b.len(),
                    "GEMM: B out of bounds"
                );
                super::gemm_dispatch::gemm_any(
                    m,
                    n,
                    k,
                    a.as_ptr(),
                    a_rs,
                    a_cs,
                    b.as_ptr(),
                    b_rs,
                    b_cs,
                    c,
                    ldc,
                    accumulate,
                );
            }
        }
    };
}
impl_conv_elem!(f32, copy_strided_f32, add_strided_f32, patches);
impl_conv_elem!(f64, copy_strided_body, add_strided_body);

/// The forward GEMM with B packed from the input: each micro-panel the GEMM asks for (a few
/// hundred patch rows by 32 output columns) is gathered straight from `x`, so the patch matrix
/// is never written and read back (the gather pass and its copies were a fifth of a forward).
mod patches {
    #[cfg(target_arch = "x86_64")]
    use super::super::sgemm::transpose_panel;
    use super::super::sgemm::{
        sgemm_filled_a, sgemm_packed_ab, sgemm_packed_b, PackB, PackedA, PanelSpot, PANEL_WIDTH,
    };
    #[cfg(target_arch = "x86_64")]
    use super::super::simd::low_lanes;
    use super::Weights;
    use super::{
        phase_start, plane_shifts, row_table, used_phases, valid_cols, Chunk, InputLayout,
        PatchInput, Sizes, MIN_INDEXED_CHANNELS,
    };
    use std::mem::MaybeUninit;

    /// B = the patches of one chunk: K rows (channel, t/h tap, w tap) by the chunk's columns.
    struct Panels<'a> {
        x: &'a [f32],
        s: &'a Sizes,
        /// Step between a run's values in `x`: 1 for a phase-split input, else the W stride.
        step: usize,
        /// Input offset (within a channel block) of the row read by chunk row `R` (item-major)
        /// and t/h tap: `rows[R * taps + tap]`, `usize::MAX` in the T/H padding.
        rows: Vec<usize>,
        /// Every panel's runs, built once per chunk (each panel is packed once per depth
        /// block): `runs[spans[panel * kw + kk].0..spans[panel * kw + kk].1]` for w tap kk.
        runs: Vec<Run>,
        spans: Vec<(usize, usize)>,
    }

    /// A patch row index as (channel, t/h tap, w tap), stepped without divisions.
    #[derive(Clone, Copy)]
    struct PatchRow {
        ch: usize,
        tap: usize,
        kk: usize,
    }

    impl PatchRow {
        fn new(k: usize, taps: usize, kw: usize) -> Self {
            let rest = k / kw;
            Self {
                ch: rest / taps,
                tap: rest % taps,
                kk: k % kw,
            }
        }

        fn step(&mut self, taps: usize, kw: usize) {
            self.kk += 1;
            if self.kk == kw {
                self.kk = 0;
                self.tap += 1;
                if self.tap == taps {
                    self.tap = 0;
                    self.ch += 1;
                }
            }
        }
    }

    /// One run of a panel's columns inside one output row, for one w tap: `count` values from
    /// input offset `src` (within the row the t/h tap reads) go to panel column `dst`.
    #[derive(Clone, Copy, Default)]
    struct Run {
        /// Chunk row (item-major) of these columns.
        row: usize,
        dst: usize,
        src: usize,
        count: usize,
    }

    impl<'a> Panels<'a> {
        /// The patches of `chunk` (built once per chunk: the GEMM packs each panel once per
        /// depth block).
        fn new(input: PatchInput<'a, f32>, s: &'a Sizes, chunk: &Chunk) -> Self {
            let x = input.data;
            assert_eq!(x.len(), s.c * s.b * s.t * s.h * s.w, "conv input size");
            let taps = s.g.kernel[0] * s.g.kernel[1];
            let per_item = chunk.nrows * taps;
            let mut rows = vec![usize::MAX; chunk.items * per_item];
            for (i, table) in rows.chunks_exact_mut(per_item.max(1)).enumerate() {
                row_table(s, chunk.b0 + i, (chunk.r0, chunk.nrows), table);
            }
            let phased = match input.layout {
                InputLayout::Plain => false,
                InputLayout::RowPhases => true,
                InputLayout::Planes => panic!("copied runs read plain or row-phase input"),
            };
            let (runs, spans) = panel_runs(s, chunk.ncols(s), phased);
            Self {
                x,
                s,
                step: if phased { 1 } else { s.g.stride[2] },
                rows,
                runs,
                spans,
            }
        }
    }

    impl PackB for Panels<'_> {
        unsafe fn pack(&self, pc: usize, kc: usize, j: usize, _nr: usize, dst: *mut f32) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: this GEMM path runs only where AVX-512F was detected; `dst` is the
            // caller's kc x PANEL_WIDTH buffer.
            unsafe {
                self.pack_avx512(pc, kc, j, dst)
            }
        }
    }

    impl Panels<'_> {
        /// [`PackB::pack`], compiled for AVX-512 so the run copies inline. The panel's width is
        /// implied by `j` (its runs were built for it).
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f")]
        unsafe fn pack_avx512(&self, pc: usize, kc: usize, j: usize, dst: *mut f32) {
            // The panel's rows read short runs scattered over many channel planes: touch them
            // all first (prefetches overlap their cache misses), then copy.
            self.prefetch(pc, kc, j);
            // SAFETY: the caller's contract.
            unsafe { self.copy_avx512(pc, kc, j, dst) }
        }

        /// Panel `j`'s runs for w tap `kk`.
        fn runs(&self, j: usize, kk: usize) -> &[Run] {
            debug_assert_eq!(j % PANEL_WIDTH, 0);
            let (a, b) = self.spans[j / PANEL_WIDTH * self.s.g.kernel[2] + kk];
            &self.runs[a..b]
        }

        /// Prefetches the input rows that rows `pc..pc + kc` of panel `j` read.
        #[cfg(target_arch = "x86_64")]
        fn prefetch(&self, pc: usize, kc: usize, j: usize) {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let s = self.s;
            let [kt, kh, kw] = s.g.kernel;
            let taps = kt * kh;
            let channel = s.b * s.t * s.h * s.w;
            let mut k = PatchRow::new(pc, taps, kw);
            for _ in 0..kc {
                if k.kk == 0 {
                    for r in self.runs(j, 0) {
                        let base = self.rows[r.row * taps + k.tap];
                        if base != usize::MAX {
                            let at = self.x.as_ptr().wrapping_add(k.ch * channel + base + r.src);
                            // SAFETY: prefetching never faults, whatever the address.
                            unsafe {
                                _mm_prefetch::<_MM_HINT_T0>(at.cast());
                                _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(16).cast());
                                _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(32).cast());
                            }
                        }
                    }
                }
                k.step(taps, kw);
            }
        }

        /// Writes rows `pc..pc + kc` of panel `j` to `dst` (kc x PANEL_WIDTH).
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f")]
        unsafe fn copy_avx512(&self, pc: usize, kc: usize, j: usize, dst: *mut f32) {
            let s = self.s;
            let [kt, kh, kw] = s.g.kernel;
            let taps = kt * kh;
            let step = self.step;
            let channel = s.b * s.t * s.h * s.w;
            let mut k = PatchRow::new(pc, taps, kw);
            for p in 0..kc {
                // SAFETY: row p of the kc x PANEL_WIDTH buffer the GEMM handed out.
                let out = unsafe { dst.add(p * PANEL_WIDTH) };
                // SAFETY: as above; runs write inside the row's first `nr` columns.
                unsafe { zero_row(out) };
                for r in self.runs(j, k.kk) {
                    let base = self.rows[r.row * taps + k.tap];
                    if base == usize::MAX {
                        continue;
                    }
                    let first = k.ch * channel + base + r.src;
                    debug_assert!(first + (r.count - 1) * step < self.x.len());
                    // SAFETY: runs read inside the row `base` names (clipped to the valid
                    // columns of tap kk), which lies in channel `ch` < C of `x` (its length is
                    // checked in `new`); the destination columns lie inside the panel row.
                    unsafe {
                        copy_run_avx512(self.x.as_ptr().add(first), step, r.count, out.add(r.dst))
                    };
                }
                k.step(taps, kw);
            }
        }
    }

    /// The runs of every PANEL_WIDTH-column panel of `n` chunk columns (rows of `wo` columns):
    /// each panel's columns split by output row, then clipped to each w tap's valid columns.
    /// With `phased`, sources index phase-split rows (a run is then contiguous).
    fn panel_runs(s: &Sizes, n: usize, phased: bool) -> (Vec<Run>, Vec<(usize, usize)>) {
        let kw = s.g.kernel[2];
        let (sw, pw, wo) = (s.g.stride[2], s.g.pad[2], s.wo);
        // Input column c of a phase-split row sits at phase_start(c % sw) + c / sw.
        let at = |c: usize| {
            if phased {
                phase_start(s.w, sw, c % sw) + c / sw
            } else {
                c
            }
        };
        let cols: Vec<(usize, usize)> = (0..kw).map(|kk| valid_cols(s, kk)).collect();
        let (mut runs, mut spans) = (Vec::new(), Vec::new());
        for j in (0..n).step_by(PANEL_WIDTH) {
            let nr = PANEL_WIDTH.min(n - j);
            for (kk, &(lo, hi)) in cols.iter().enumerate() {
                let from = runs.len();
                let mut d = 0;
                while d < nr {
                    let col = j + d;
                    let (row, w0) = (col / wo, col % wo);
                    let len = (wo - w0).min(nr - d);
                    let (a, b) = (lo.clamp(w0, w0 + len), hi.clamp(w0, w0 + len));
                    if a < b {
                        runs.push(Run {
                            row,
                            dst: d + (a - w0),
                            src: at(a * sw + kk - pw),
                            count: b - a,
                        });
                    }
                    d += len;
                }
                spans.push((from, runs.len()));
            }
        }
        (runs, spans)
    }

    /// Zeroes one PANEL_WIDTH-float panel row.
    ///
    /// # Safety
    /// `row` must be valid for PANEL_WIDTH writes.
    #[inline(always)]
    unsafe fn zero_row(row: *mut f32) {
        // SAFETY: the caller's contract.
        unsafe { std::ptr::write_bytes(row, 0, PANEL_WIDTH) };
    }

    /// dst[i] = src[i * step] for i < count (count <= PANEL_WIDTH), with masked vector loads
    /// and stores.
    ///
    /// # Safety
    /// AVX-512F must be present; `src` must be readable at the `count` strided positions and
    /// `dst` writable for `count` floats.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn copy_run_avx512(src: *const f32, step: usize, count: usize, dst: *mut f32) {
        use std::arch::x86_64::*;
        let mut i = 0;
        while i < count {
            let n = (count - i).min(16);
            let mask = low_lanes(n);
            // SAFETY: lanes < n are in bounds by the caller's contract; others are masked.
            unsafe {
                let v = if step == 1 {
                    _mm512_maskz_loadu_ps(mask, src.add(i))
                } else {
                    let lanes =
                        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
                    let idx = _mm512_mullo_epi32(lanes, _mm512_set1_epi32(step as i32));
                    _mm512_mask_i32gather_ps::<4>(
                        _mm512_setzero_ps(),
                        mask,
                        idx,
                        src.add(i * step).cast(),
                    )
                };
                _mm512_mask_storeu_ps(dst.add(i), mask, v);
            }
            i += 16;
        }
    }

    /// See [`super::ConvElem::gemm_patches`].
    pub(super) fn gemm(
        m: usize,
        (a, m0): (Weights<'_, f32>, usize),
        x: PatchInput<'_, f32>,
        s: &Sizes,
        chunk: &Chunk,
        c: *mut f32,
        ldc: usize,
    ) -> bool {
        if m == 0 {
            // A probe: report whether the path exists.
            return super::super::sgemm::has_fast_path();
        }
        let n = chunk.ncols(s);
        // SAFETY (both calls): C's m rows of n columns are the caller's (the chunk's part of
        // the output); the panels read only input elements inside `x` (Panels through indexed
        // slices, IndexedPanels at positions it built from in-range coordinates).
        if let Some(panels) = IndexedPanels::new(x, s, chunk) {
            return unsafe { weights_times(m, n, s.k(), (a, m0), &panels, c, ldc) };
        }
        let panels = Panels::new(x, s, chunk);
        unsafe { weights_times(m, n, s.k(), (a, m0), &panels, c, ldc) }
    }

    /// C (m x n) = rows `m0..m0 + m` of the weight (O x k) x B, with whichever GEMM entry
    /// reads that weight.
    ///
    /// # Safety
    /// C's m rows of n columns (`ldc` apart) are writable; `b` packs every panel of k x n.
    unsafe fn weights_times(
        m: usize,
        n: usize,
        k: usize,
        (a, m0): (Weights<'_, f32>, usize),
        b: &impl PackB,
        c: *mut f32,
        ldc: usize,
    ) -> bool {
        match a {
            Weights::Rows(w) => {
                assert!((m0 + m) * k <= w.len(), "GEMM: A out of bounds");
                // SAFETY: rows m0.. + m of A are in bounds (asserted); the rest is the caller's.
                unsafe { sgemm_packed_b(m, n, k, w.as_ptr().add(m0 * k), k, 1, b, c, ldc, false) }
            }
            // SAFETY: the packed GEMM checks the rows against the packed weight; the rest is
            // the caller's.
            Weights::Packed(pa) => unsafe { sgemm_packed_ab(m, n, k, (pa, m0), b, c, ldc, false) },
            Weights::Flipped { w, of } => {
                let fill = flipped_fill(w, of);
                assert!(
                    m0 + m <= of.c && k * of.c == of.weight_len(),
                    "GEMM: flipped A out of bounds"
                );
                // SAFETY: the fill writes every value of the panel it is given; the rest is the
                // caller's.
                unsafe { sgemm_filled_a(m, n, k, (&fill, m0), b, c, ldc, false) }
            }
        }
    }

    /// Writes panels of the twin weight of `of` ([`super::flip_transpose`]`(w, of)`) from `w`,
    /// every value of the slice it is given.
    fn flipped_fill<'a>(
        w: &'a [f32],
        of: &Sizes,
    ) -> impl Fn(PanelSpot, &mut [MaybeUninit<f32>]) + Sync + 'a {
        let taps: usize = of.g.kernel.iter().product();
        assert_eq!(w.len(), of.weight_len(), "flipped weight: wrong length");
        let c = of.c;
        move |spot, dst| {
            // The panel's size, and the source rows and taps it reads, checked once per panel.
            let o_end = (spot.pc + spot.kc).div_ceil(taps);
            assert!(
                dst.len() == spot.height * spot.kc
                    && (1..=spot.height).contains(&spot.rows)
                    && spot.height <= 16
                    && spot.row0 + spot.rows <= c
                    && o_end * c * taps <= w.len(),
                "flipped weight: panel {spot:?} outside the weight or its buffer"
            );
            #[cfg(target_arch = "x86_64")]
            if super::super::simd::has_avx512() {
                // SAFETY: AVX-512F is present; `dst` holds height x kc values and the reads
                // are inside `w` (both asserted above).
                unsafe { flipped_panel_avx512(w, c, taps, spot, dst.as_mut_ptr().cast()) };
                return;
            }
            flipped_panel(w, c, taps, spot, dst)
        }
    }

    /// [`flipped_panel`] with one masked gather per panel row.
    ///
    /// # Safety
    /// AVX-512F must be present; `dst` valid for `spot.height * spot.kc` writes; the rows
    /// `row0..row0 + rows` (at least one) of every output channel the depth range reads lie
    /// inside `w`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn flipped_panel_avx512(
        w: &[f32],
        c: usize,
        taps: usize,
        spot: PanelSpot,
        dst: *mut f32,
    ) {
        use std::arch::x86_64::*;
        let h = spot.height;
        let (read, write) = (low_lanes(spot.rows), low_lanes(h));
        // Lane i reads input channel row0 + i: `taps` values further each.
        let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let idx = _mm512_mullo_epi32(lane, _mm512_set1_epi32(taps as i32));
        let zero = _mm512_setzero_ps();
        let (mut o, mut t) = (spot.pc / taps, spot.pc % taps);
        // Successive output channels are C * taps values apart, beyond the hardware
        // prefetcher's reach: fetch the block (rows x taps values) a few channels ahead.
        const AHEAD: usize = 2;
        let block = spot.rows * taps;
        for p in 0..spot.kc {
            if t == 0 || p == 0 {
                let ahead = ((o + AHEAD) * c + spot.row0) * taps;
                if ahead + block <= w.len() {
                    super::prefetch(&w[ahead..ahead + block]);
                }
            }
            let base = (o * c + spot.row0) * taps + (taps - 1 - t);
            // SAFETY: the lanes read w[base + i * taps] for i < rows, inside `w` (the caller's
            // contract); lanes rows..h are stored as zeros into row p of the panel.
            unsafe {
                let v = _mm512_mask_i32gather_ps::<4>(zero, read, idx, w.as_ptr().add(base).cast());
                _mm512_mask_storeu_ps(dst.add(p * h), write, v);
            }
            t += 1;
            if t == taps {
                t = 0;
                o += 1;
            }
        }
    }

    /// See [`super::ConvElem::pack_weights`].
    pub(super) fn pack_weights(
        w: &[f32],
        s: &Sizes,
        flip_of: Option<&Sizes>,
        segment: usize,
    ) -> Option<PackedA> {
        let (m, k) = (s.o, s.k());
        let Some(f) = flip_of else {
            return PackedA::new(m, k, segment, w, k, 1);
        };
        // The twin's weight (C, O, taps reversed) of f's (O, C, taps): row c, depth o * taps + t
        // holds w[o, c, taps - 1 - t].
        assert!(
            (m, k) == (f.c, f.k() / f.c * f.o),
            "flipped weight: {:?} is not the twin of {:?}",
            (m, k),
            (f.o, f.c)
        );
        // SAFETY: the fill writes every value of each panel (rows past `rows` as zeros).
        unsafe { PackedA::with(m, k, segment, &flipped_fill(w, f)) }
    }

    /// One micro-panel of the flipped, transposed weight, read straight from `w` (O, C, taps):
    /// `dst[p * height + i] = w[o, row0 + i, taps - 1 - t]` for depth pc + p = o * taps + t,
    /// zeros in rows `rows..height`. The definition [`flipped_panel_avx512`] is tested
    /// against, and the fill's path without AVX-512 (which the GEMMs never take today).
    fn flipped_panel(
        w: &[f32],
        c: usize,
        taps: usize,
        spot: PanelSpot,
        dst: &mut [MaybeUninit<f32>],
    ) {
        let h = spot.height;
        let (mut o, mut t) = (spot.pc / taps, spot.pc % taps);
        for row in dst.chunks_exact_mut(h).take(spot.kc) {
            let base = (o * c + spot.row0) * taps + (taps - 1 - t);
            let src = &w[base..base + (spot.rows - 1) * taps + 1];
            for (i, d) in row.iter_mut().enumerate() {
                d.write(if i < spot.rows { src[i * taps] } else { 0.0 });
            }
            t += 1;
            if t == taps {
                t = 0;
                o += 1;
            }
        }
    }

    /// The patches of a chunk packed from a table built once per chunk, for each panel and
    /// kernel tap, instead of copying runs. Copying costs a table lookup, a mask and a
    /// load/store pair for every output row a 32-column panel crosses: 7-8 per panel row at
    /// W' = 5. With the table a panel row costs the same whatever the map:
    /// * **shifted loads**, for a stride-1 convolution whose output has the input's size (the
    ///   second convolution of every block, and the input-gradient twins), and for a strided
    ///   one read from its phase planes: output and input planes share one layout, so each
    ///   tap reads a plane shifted by one offset, and a panel row is two masked loads (the
    ///   mask zeroes the padding);
    /// * **gathers**, for other strided convolutions with short output rows: two masked
    ///   gathers of 32 precomputed offsets.
    pub(super) struct IndexedPanels<'a> {
        x: &'a [f32],
        /// Elements of one channel's block: B * T * H * W, or its phase planes.
        plane: usize,
        /// Kernel taps kt * kh * kw (rows per input channel).
        taps: usize,
        /// `mask[q * taps + t]`: bit jj set when column jj of panel q reads inside the input
        /// at tap t.
        mask: Vec<u32>,
        /// How a set lane finds its input.
        source: Source,
    }

    /// The input positions of [`IndexedPanels`].
    enum Source {
        /// Column c reads `col0 + c + shift[t]` at tap t.
        Shift { col0: usize, shift: Vec<isize> },
        /// Column jj of panel q reads `offsets[q * taps + t][jj]` at tap t.
        Gather { offsets: Vec<[i32; 32]> },
    }

    impl<'a> IndexedPanels<'a> {
        /// The table for `chunk`, or `None` where copying runs does as well or better: fewer
        /// than 8 input channels (the table, per panel and tap, would cost as much as the
        /// packing it saves), output rows of 12 or more columns that are not a same-size
        /// stride-1 convolution nor read from phase planes (a panel crosses at most four rows;
        /// gathers measured no faster there), or a plane too large for 32-bit gather offsets.
        /// Phase planes (see `phase_planes`) always have a table.
        pub(super) fn new(input: PatchInput<'a, f32>, s: &Sizes, chunk: &Chunk) -> Option<Self> {
            let x = input.data;
            let planes = input.layout == InputLayout::Planes;
            // A channel's block: its kept phase planes, or its (B, T, H, W) values.
            let plane = if planes {
                let phases: usize = used_phases(s).iter().map(Vec::len).product();
                phases * s.b * s.to * s.ho * s.wo
            } else {
                s.b * s.t * s.h * s.w
            };
            assert_eq!(x.len(), s.c * plane, "conv input size");
            let same = s.g.stride == [1, 1, 1] && [s.to, s.ho, s.wo] == [s.t, s.h, s.w];
            let shifted = same || planes;
            if !planes
                && (s.c < MIN_INDEXED_CHANNELS || !(same || s.wo < 12) || plane > i32::MAX as usize)
            {
                return None;
            }
            let [kt, kh, kw] = s.g.kernel;
            let [st, sh, sw] = s.g.stride;
            let [pt, ph, pw] = s.g.pad;
            let taps = kt * kh * kw;
            let n = chunk.ncols(s);
            let per_item = chunk.nrows * s.wo;
            let panels = n.div_ceil(PANEL_WIDTH);
            let mut mask = vec![0u32; panels * taps];
            let mut offsets = if shifted {
                Vec::new()
            } else {
                vec![[0i32; 32]; panels * taps]
            };
            // Input column w of a (strided, so possibly phase-split) row.
            let col = |w: usize| {
                if input.layout == InputLayout::RowPhases {
                    phase_start(s.w, sw, w % sw) + w / sw
                } else {
                    w
                }
            };
            for c in 0..n {
                let (q, jj) = (c / PANEL_WIDTH, c % PANEL_WIDTH);
                let b = chunk.b0 + c / per_item;
                let r = chunk.r0 + c % per_item / s.wo;
                let (to, ho, wo) = (r / s.ho, r % s.ho, c % s.wo);
                for i in 0..kt {
                    let Some(ti) = (to * st + i).checked_sub(pt).filter(|&v| v < s.t) else {
                        continue;
                    };
                    for j in 0..kh {
                        let Some(hi) = (ho * sh + j).checked_sub(ph).filter(|&v| v < s.h) else {
                            continue;
                        };
                        for l in 0..kw {
                            let Some(wi) = (wo * sw + l).checked_sub(pw).filter(|&v| v < s.w)
                            else {
                                continue;
                            };
                            let t = (i * kh + j) * kw + l;
                            mask[q * taps + t] |= 1 << jj;
                            if let Some(o) = offsets.get_mut(q * taps + t) {
                                // < plane <= i32::MAX (checked above).
                                o[jj] = (((b * s.t + ti) * s.h + hi) * s.w + col(wi)) as i32;
                            }
                        }
                    }
                }
            }
            let source = if shifted {
                // A same-size stride-1 input is one phase plane: the output's layout.
                let out_plane = s.b * s.to * s.ho * s.wo;
                let shift = plane_shifts(s)
                    .into_iter()
                    .map(|(phase, d)| (phase * out_plane) as isize + d)
                    .collect();
                Source::Shift {
                    col0: chunk.col_start(s),
                    shift,
                }
            } else {
                Source::Gather { offsets }
            };
            Some(Self {
                x,
                plane,
                taps,
                mask,
                source,
            })
        }

        /// Writes rows `pc..pc + kc` of panel `j` to `dst` (kc x PANEL_WIDTH, every element).
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f")]
        pub(super) unsafe fn pack_avx512(&self, pc: usize, kc: usize, j: usize, dst: *mut f32) {
            use std::arch::x86_64::*;
            let q = j / PANEL_WIDTH;
            let (mut ch, mut t) = (pc / self.taps, pc % self.taps);
            let mask = &self.mask[q * self.taps..][..self.taps];
            let z = _mm512_setzero_ps();
            for p in 0..kc {
                assert!(ch * self.plane < self.x.len(), "patch row beyond the input");
                let m = mask[t];
                let (m0, m1) = (m as u16, (m >> 16) as u16);
                // SAFETY: a set lane reads the input position `new` found inside plane `ch`
                // (< C, asserted just above): for a shift, column col0 + j + jj moved by the
                // tap (output and input planes share one layout); for a gather, its offset.
                // Masked-off lanes are not read (AVX-512 masked loads and gathers do not touch
                // them), so the shifted pointer may lie outside `x`, hence the wrapping
                // arithmetic. `dst` is the caller's kc x PANEL_WIDTH panel.
                unsafe {
                    let base = self.x.as_ptr().wrapping_add(ch * self.plane);
                    let (v0, v1) = match &self.source {
                        Source::Shift { col0, shift } => {
                            let src = base.wrapping_offset((col0 + j) as isize + shift[t]);
                            (
                                _mm512_maskz_loadu_ps(m0, src),
                                _mm512_maskz_loadu_ps(m1, src.wrapping_add(16)),
                            )
                        }
                        Source::Gather { offsets } => {
                            let o = &offsets[q * self.taps + t];
                            let i0 = _mm512_loadu_si512(o.as_ptr().cast());
                            let i1 = _mm512_loadu_si512(o.as_ptr().add(16).cast());
                            (
                                _mm512_mask_i32gather_ps::<4>(z, m0, i0, base.cast()),
                                _mm512_mask_i32gather_ps::<4>(z, m1, i1, base.cast()),
                            )
                        }
                    };
                    let d = dst.add(p * PANEL_WIDTH);
                    _mm512_storeu_ps(d, v0);
                    _mm512_storeu_ps(d.add(16), v1);
                }
                t += 1;
                if t == self.taps {
                    t = 0;
                    ch += 1;
                }
            }
        }
    }

    impl IndexedPanels<'_> {
        /// Adds patch rows of channels `chans` (`dcols`, `n` columns each) back where
        /// [`IndexedPanels::pack_avx512`] reads them, in `dst`, a buffer laid out as the input
        /// (the adjoint of packing). Each row is one masked add per panel; rows go in patch-row
        /// order, the order of the copied-run scatter, so the sums round the same.
        ///
        /// # Safety
        /// AVX-512F must be present; `dst` must be valid for reads and writes of `x.len()`
        /// values, with no other thread touching the blocks of channels `chans`. The source
        /// must be shifted loads, and `dcols` hold `chans.len() * taps * n` values.
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f")]
        unsafe fn scatter_avx512(
            &self,
            dcols: &[f32],
            n: usize,
            chans: std::ops::Range<usize>,
            dst: *mut f32,
        ) {
            use std::arch::x86_64::*;
            let Source::Shift { col0, shift } = &self.source else {
                panic!("scatters go through shifted loads only");
            };
            assert!(dcols.len() >= chans.len() * self.taps * n);
            let panels = n.div_ceil(PANEL_WIDTH);
            for (ci, ch) in chans.enumerate() {
                assert!(ch * self.plane < self.x.len(), "patch row beyond the input");
                let base = dst.wrapping_add(ch * self.plane);
                for t in 0..self.taps {
                    let row = dcols[(ci * self.taps + t) * n..].as_ptr();
                    for q in 0..panels {
                        let m = self.mask[q * self.taps + t];
                        let (m0, m1) = (m as u16, (m >> 16) as u16);
                        // SAFETY: a set lane is a column < n of this row (the table sets no
                        // others) and names the input position the forward reads, inside
                        // channel ch's block of `dst` (see `pack_avx512`); masked-off lanes are
                        // neither read nor written.
                        unsafe {
                            let g = row.add(q * PANEL_WIDTH);
                            let d =
                                base.wrapping_offset((col0 + q * PANEL_WIDTH) as isize + shift[t]);
                            let v0 = _mm512_add_ps(
                                _mm512_maskz_loadu_ps(m0, d),
                                _mm512_maskz_loadu_ps(m0, g),
                            );
                            _mm512_mask_storeu_ps(d, m0, v0);
                            let v1 = _mm512_add_ps(
                                _mm512_maskz_loadu_ps(m1, d.wrapping_add(16)),
                                _mm512_maskz_loadu_ps(m1, g.wrapping_add(16)),
                            );
                            _mm512_mask_storeu_ps(d.wrapping_add(16), m1, v1);
                        }
                    }
                }
            }
        }
    }

    impl PackB for IndexedPanels<'_> {
        unsafe fn pack(&self, pc: usize, kc: usize, j: usize, _nr: usize, dst: *mut f32) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: this GEMM path runs only where AVX-512F was detected; `dst` is the
            // caller's kc x PANEL_WIDTH buffer.
            unsafe {
                self.pack_avx512(pc, kc, j, dst)
            }
        }
    }

    /// Largest patch matrix (values) [`gemm_rows_split`] packs whole: 16 MiB, several times the
    /// deep layers' (5.9 MB for the audio CNN's 512-channel layer at batch 8).
    const PREPACKED_MAX: usize = 4 << 20;

    /// One cache line of a [`Prepacked`] B, so its panels start 64-byte aligned.
    #[repr(C, align(64))]
    #[derive(Clone, Copy)]
    struct Line([f32; 16]);

    /// Every micro-panel of a chunk's patches packed once, in full depth, for GEMMs that split
    /// the product by rows across threads and would otherwise each pack all of B (the deep
    /// layers: a few hundred columns, hundreds of weight rows per thread).
    struct Prepacked {
        /// Panel `q` (columns 32q..) holds rows 0..K at `lines[q * K * 2..]`, row-major.
        lines: Vec<Line>,
        k: usize,
    }

    impl Prepacked {
        /// Packs the panels of `panels` (K x n) on the rayon pool, a panel per task.
        fn new(panels: &impl PackB, k: usize, n: usize) -> Self {
            use rayon::prelude::*;
            // The panel sources write nothing without AVX-512; `set_len` below relies on them.
            assert!(
                super::super::sgemm::has_fast_path(),
                "prepacked panels need AVX-512"
            );
            const _: () = assert!(PANEL_WIDTH == 32);
            let per = 2 * k;
            let count = n.div_ceil(PANEL_WIDTH);
            let mut lines: Vec<Line> = Vec::with_capacity(count * per);
            lines.spare_capacity_mut()[..count * per]
                .par_chunks_mut(per.max(1))
                .enumerate()
                .for_each(|(q, piece)| {
                    let dst = piece.as_mut_ptr().cast::<f32>();
                    let nr = PANEL_WIDTH.min(n - q * PANEL_WIDTH);
                    // Depth blocks of the GEMM's size, so the prefetch runs just ahead.
                    let mut pc = 0;
                    while pc < k {
                        let kc = super::super::sgemm::DEPTH_BLOCK.min(k - pc);
                        // SAFETY: rows pc.. + kc of this panel lie inside the piece (2 lines
                        // = 32 floats per row), which the pack writes in full (zeros past nr).
                        unsafe {
                            panels.pack(pc, kc, q * PANEL_WIDTH, nr, dst.add(pc * PANEL_WIDTH))
                        };
                        pc += kc;
                    }
                });
            // SAFETY: each piece (one panel, K rows of 32 floats) was written in full above.
            unsafe { lines.set_len(count * per) };
            Self { lines, k }
        }
    }

    impl PackB for Prepacked {
        unsafe fn pack(&self, pc: usize, kc: usize, j: usize, _nr: usize, dst: *mut f32) {
            // SAFETY: rows pc.. + kc of the panel are inside `lines`; `dst` is the caller's.
            unsafe { std::ptr::copy_nonoverlapping(self.row(pc, j), dst, kc * PANEL_WIDTH) };
        }

        unsafe fn packed(&self, pc: usize, j: usize) -> Option<*const f32> {
            Some(self.row(pc, j))
        }
    }

    impl Prepacked {
        /// Row `pc` of the panel holding column `j`: every panel is kept, rows 0..K each, so
        /// for (pc, j) inside the extent the rest of the panel follows.
        fn row(&self, pc: usize, j: usize) -> *const f32 {
            let at = (j / PANEL_WIDTH * self.k + pc) * PANEL_WIDTH;
            debug_assert!(at < self.lines.len() * 16);
            self.lines.as_ptr().cast::<f32>().wrapping_add(at)
        }
    }

    /// [`gemm`] for a chunk of few columns and many weight rows: B packed once on all
    /// threads, then the rows split across them, each reading the shared panels in place.
    pub(super) fn gemm_rows_split(
        m: usize,
        a: Weights<'_, f32>,
        x: PatchInput<'_, f32>,
        s: &Sizes,
        chunk: &Chunk,
        c: *mut f32,
        ldc: usize,
    ) -> bool {
        if !super::super::sgemm::has_fast_path() {
            return false;
        }
        let k = s.k();
        let n = chunk.ncols(s);
        let c = super::SharedMut(c);
        if k * n > PREPACKED_MAX {
            // Too large to keep packed (many threads make "few chunks" many columns): each
            // thread packs the panels its rows need, as for any other chunk.
            return super::split_blocks(m, super::ROW_UNIT, |m0, rows| {
                // SAFETY: rows m0.. of C belong to this block only.
                let cp = unsafe { c.get().add(m0 * ldc) };
                gemm(rows, (a, m0), x, s, chunk, cp, ldc)
            });
        }
        let b = match IndexedPanels::new(x, s, chunk) {
            Some(panels) => Prepacked::new(&panels, k, n),
            None => Prepacked::new(&Panels::new(x, s, chunk), k, n),
        };
        super::split_blocks(m, super::ROW_UNIT, |m0, rows| {
            // SAFETY: rows m0.. + rows of C belong to this block only; the panels were packed
            // for all n columns and K rows.
            unsafe { weights_times(rows, n, k, (a, m0), &b, c.get().add(m0 * ldc), ldc) }
        })
    }

    /// See [`super::ConvElem::gemm_dw_patches`].
    #[allow(clippy::too_many_arguments)]
    pub(super) fn gemm_dw(
        m: usize,
        (dy, ld): (&[f32], usize),
        x: PatchInput<'_, f32>,
        s: &Sizes,
        chunk: &Chunk,
        dw: *mut f32,
        (k0, nk): (usize, usize),
        accumulate: bool,
    ) -> bool {
        if m == 0 {
            return super::super::sgemm::has_fast_path();
        }
        let (k, n) = (s.k(), chunk.ncols(s));
        assert!(
            n == 0 || (m - 1) * ld + n <= dy.len(),
            "GEMM: output gradient out of bounds"
        );
        assert!(k0 + nk <= k, "weight-gradient columns out of range");
        let dw = dw.wrapping_add(k0);
        // SAFETY (both calls): dY's m rows of n elements are in bounds (asserted above); dW's m
        // rows of K are the caller's and columns k0.. + nk lie inside them; the panels read
        // only inside `x` (see `gemm`).
        if let Some(panels) = IndexedPanels::new(x, s, chunk) {
            let panels = Transposed { panels, k0 };
            return unsafe {
                sgemm_packed_b(m, nk, n, dy.as_ptr(), ld, 1, &panels, dw, k, accumulate)
            };
        }
        let panels = Transposed {
            panels: Panels::new(x, s, chunk),
            k0,
        };
        unsafe { sgemm_packed_b(m, nk, n, dy.as_ptr(), ld, 1, &panels, dw, k, accumulate) }
    }

    /// Whether `s` is the geometry [`split_2x2`] and [`merge_2x2`] handle: planes apply,
    /// stride (1, 2, 2), and both H and W phases kept (odd spatial kernels with "same"
    /// padding: every strided spatial convolution of the encoders), on AVX-512.
    fn is_2x2(s: &Sizes) -> bool {
        super::planes_apply(s)
            && s.g.stride == [1, 2, 2]
            && super::used_phases(s) == [vec![0], vec![0, 1], vec![0, 1]]
            && super::super::sgemm::has_fast_path()
    }

    /// `phase_planes` for [`is_2x2`] geometries: each input row is loaded once and split into
    /// its two W phases by vector permutes, in one pass per channel (the generic path costs a
    /// call per output row, most of its time on the deep layers' 5-10 column rows).
    pub(super) fn split_2x2(x: &[f32], s: &Sizes) -> Option<Vec<f32>> {
        if !is_2x2(s) {
            return None;
        }
        let (h, w, ho, wo) = (s.h, s.w, s.ho, s.wo);
        let plane = s.b * s.to * ho * wo;
        let block = h * w;
        assert_eq!(x.len(), s.c * s.b * s.t * block, "conv input size");
        let fill = |c: usize, dst: &mut [MaybeUninit<f32>]| {
            let dst = dst.as_mut_ptr().cast::<f32>();
            for bt in 0..s.b * s.t {
                let src = &x[(c * s.b * s.t + bt) * block..][..block];
                // SAFETY: AVX-512F is present (`is_2x2`); `dst` is one channel's four planes,
                // and this (b, t)'s (H', W') blocks start bt * H' * W' into each.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    split_block_2x2(src, (h, w), (ho, wo), dst.add(bt * ho * wo), plane)
                };
                #[cfg(not(target_arch = "x86_64"))]
                let _ = (src, dst);
            }
        };
        // SAFETY: a piece is one channel's four planes; `split_block_2x2` writes every
        // position of each of them (see there) for every (b, t).
        Some(unsafe { super::par_init(s.c * 4 * plane, 4 * plane, fill) })
    }

    /// One (H, W) block into the (H', W') blocks of planes (rh, rw) = (0, 0), (0, 1), (1, 0),
    /// (1, 1), `plane` apart from `dst`: every position, zeros where no input row or column
    /// falls (an odd H or W).
    ///
    /// # Safety
    /// AVX-512F must be present; H' = ceil(H / 2), W' = ceil(W / 2), and `dst + k * plane`
    /// valid for H' W' writes for k < 4.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn split_block_2x2(
        src: &[f32],
        (h, w): (usize, usize),
        (ho, wo): (usize, usize),
        dst: *mut f32,
        plane: usize,
    ) {
        use std::arch::x86_64::*;
        assert!(src.len() >= h * w && ho == h.div_ceil(2) && wo == w.div_ceil(2));
        let even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
        let odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
        for r in 0..2 * ho {
            let (rh, i) = (r % 2, r / 2);
            // SAFETY: the row lies inside plane (rh, *) (i < H'); writes stay in its W' values.
            unsafe {
                let de = dst.add(2 * rh * plane + i * wo);
                let dodd = dst.add((2 * rh + 1) * plane + i * wo);
                if r >= h {
                    // Past the input's last row (odd H): zero rows.
                    for j in (0..wo).step_by(16) {
                        let m = low_lanes(wo - j);
                        _mm512_mask_storeu_ps(de.add(j), m, _mm512_setzero_ps());
                        _mm512_mask_storeu_ps(dodd.add(j), m, _mm512_setzero_ps());
                    }
                    continue;
                }
                let row = src.as_ptr().add(r * w);
                for j0 in (0..w).step_by(32) {
                    let a = _mm512_maskz_loadu_ps(low_lanes(w - j0), row.add(j0));
                    let b = _mm512_maskz_loadu_ps(
                        low_lanes(w.saturating_sub(j0 + 16)),
                        // Past the row's end when it is short: masked off, never touched.
                        row.wrapping_add(j0 + 16),
                    );
                    let k = j0 / 2;
                    // Masked-off input lanes load as zero: with an odd W, the odd phase's
                    // last column (past the row's end) comes out zero and is stored as such.
                    let m = low_lanes(wo - k);
                    _mm512_mask_storeu_ps(de.add(k), m, _mm512_permutex2var_ps(a, even, b));
                    _mm512_mask_storeu_ps(dodd.add(k), m, _mm512_permutex2var_ps(a, odd, b));
                }
            }
        }
    }

    /// `from_phase_planes` for [`is_2x2`] geometries: each input-gradient row interleaves its
    /// two W phases' rows with vector permutes, in one pass per channel.
    pub(super) fn merge_2x2(dxp: &[f32], s: &Sizes) -> Option<Vec<f32>> {
        if !is_2x2(s) {
            return None;
        }
        let (h, w, ho, wo) = (s.h, s.w, s.ho, s.wo);
        let plane = s.b * s.to * ho * wo;
        let block = h * w;
        assert_eq!(dxp.len(), s.c * 4 * plane, "phase planes size");
        let fill = |c: usize, dst: &mut [MaybeUninit<f32>]| {
            for bt in 0..s.b * s.t {
                let src = &dxp[c * 4 * plane + bt * ho * wo..];
                let out = &mut dst[bt * block..][..block];
                // SAFETY: AVX-512F is present (`is_2x2`); `src` holds the rest of the channel's
                // four planes from this (b, t)'s block on (checked there).
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    merge_block_2x2(src, (h, w), (ho, wo), plane, out)
                };
                #[cfg(not(target_arch = "x86_64"))]
                let _ = (src, out);
            }
        };
        // SAFETY: a piece is one channel's (B, T, H, W) block; `merge_block_2x2` writes every
        // position of each (b, t) block.
        Some(unsafe { super::par_init(s.c * s.b * s.t * block, s.b * s.t * block, fill) })
    }

    /// The (H, W) block `out` from the (H', W') blocks of planes (rh, rw), `plane` apart from
    /// `src` (the adjoint layout of [`split_block_2x2`]): every position written.
    ///
    /// # Safety
    /// AVX-512F must be present; H' = ceil(H / 2), W' = ceil(W / 2), `src` holding 3 * plane +
    /// H' W' values and `out` H W.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn merge_block_2x2(
        src: &[f32],
        (h, w): (usize, usize),
        (ho, wo): (usize, usize),
        plane: usize,
        out: &mut [MaybeUninit<f32>],
    ) {
        use std::arch::x86_64::*;
        assert!(src.len() >= 3 * plane + ho * wo && out.len() >= h * w);
        assert!(ho == h.div_ceil(2) && wo == w.div_ceil(2));
        let lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
        let hi = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
        for r in 0..h {
            let (rh, i) = (r % 2, r / 2);
            // SAFETY: rows i < H' of planes (rh, 0) and (rh, 1), W' values each, inside `src`;
            // the W outputs of row r inside `out`.
            unsafe {
                let e = src.as_ptr().add(2 * rh * plane + i * wo);
                let o = src.as_ptr().add((2 * rh + 1) * plane + i * wo);
                let d = out.as_mut_ptr().cast::<f32>().add(r * w);
                for j0 in (0..w).step_by(32) {
                    let k = j0 / 2;
                    let m = low_lanes(wo - k);
                    let ev = _mm512_maskz_loadu_ps(m, e.add(k));
                    let ov = _mm512_maskz_loadu_ps(m, o.add(k));
                    _mm512_mask_storeu_ps(
                        d.add(j0),
                        low_lanes(w - j0),
                        _mm512_permutex2var_ps(ev, lo, ov),
                    );
                    _mm512_mask_storeu_ps(
                        d.wrapping_add(j0 + 16),
                        low_lanes(w.saturating_sub(j0 + 16)),
                        _mm512_permutex2var_ps(ev, hi, ov),
                    );
                }
            }
        }
    }

    /// See [`super::ConvElem::gather_strided`]; stride 2 (every strided layer of the encoders)
    /// as vector permutes, where the plain loop moved one value at a time.
    pub(super) fn gather_strided(src: &[f32], step: usize, dst: &mut [MaybeUninit<f32>]) {
        let n = dst.len();
        assert!(
            n == 0 || (n - 1) * step < src.len(),
            "strided copy out of bounds"
        );
        #[cfg(target_arch = "x86_64")]
        if step == 2 && super::super::sgemm::has_fast_path() {
            // SAFETY: AVX-512F was detected; the bounds are asserted above.
            unsafe { gather2_avx512(src, dst) };
            return;
        }
        super::strided_row(src, step, dst)
    }

    /// See [`super::ConvElem::spread_strided`]; stride 2 as expanding loads and masked stores.
    pub(super) fn spread_strided(src: &[f32], step: usize, dst: &mut [MaybeUninit<f32>]) {
        let n = src.len();
        assert!(
            n == 0 || (n - 1) * step < dst.len(),
            "strided copy out of bounds"
        );
        #[cfg(target_arch = "x86_64")]
        if step == 2 && super::super::sgemm::has_fast_path() {
            // SAFETY: AVX-512F was detected; the bounds are asserted above.
            unsafe { spread2_avx512(src, dst) };
            return;
        }
        super::scatter_row_strided(src, step, dst)
    }

    /// dst[i] = src[2 i].
    ///
    /// # Safety
    /// AVX-512F must be present, and `src` hold at least 2 `dst.len()` - 1 values.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn gather2_avx512(src: &[f32], dst: &mut [MaybeUninit<f32>]) {
        use std::arch::x86_64::*;
        let n = dst.len();
        let even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
        let mut i = 0;
        while i < n {
            let rem = (n - i).min(16);
            // Source values 2i ..= 2i + 2 (rem - 1), all inside `src`.
            let need = 2 * rem - 1;
            // SAFETY: the loads read only lanes below `need` from 2i on (in bounds by the
            // contract); the store writes `rem` values from i, inside `dst`.
            unsafe {
                let p = src.as_ptr().add(2 * i);
                let a = _mm512_maskz_loadu_ps(low_lanes(need), p);
                // Past `src`'s end near its tail: masked off, never touched.
                let b =
                    _mm512_maskz_loadu_ps(low_lanes(need.saturating_sub(16)), p.wrapping_add(16));
                let v = _mm512_permutex2var_ps(a, even, b);
                _mm512_mask_storeu_ps(dst.as_mut_ptr().add(i).cast(), low_lanes(rem), v);
            }
            i += 16;
        }
    }

    /// dst[2 i] = src[i]; the odd slots are not touched.
    ///
    /// # Safety
    /// AVX-512F must be present, and `dst` hold at least 2 `src.len()` - 1 values.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn spread2_avx512(src: &[f32], dst: &mut [MaybeUninit<f32>]) {
        use std::arch::x86_64::*;
        let n = src.len();
        let mut i = 0;
        while i < n {
            let rem = (n - i).min(8);
            // Even lanes 0, 2, .., 2 (rem - 1).
            let m = 0x5555 & low_lanes(2 * rem - 1);
            // SAFETY: the expanding load reads `rem` values from i (inside `src`); the store
            // writes slots 2i + 2k for k < rem, inside `dst` by the contract.
            unsafe {
                let v = _mm512_maskz_expandloadu_ps(m, src.as_ptr().add(i));
                _mm512_mask_storeu_ps(dst.as_mut_ptr().add(2 * i).cast(), m, v);
            }
            i += 8;
        }
    }

    /// See [`super::ConvElem::scatter_planes`].
    ///
    /// # Safety
    /// As there.
    pub(super) unsafe fn scatter_planes(
        dcols: &[f32],
        planes: PatchInput<'_, f32>,
        s: &Sizes,
        chunk: &Chunk,
        dxp: *mut f32,
        parallel: bool,
    ) -> bool {
        if !super::super::sgemm::has_fast_path() {
            return false;
        }
        assert_eq!(
            planes.layout,
            InputLayout::Planes,
            "a scatter into phase planes"
        );
        let table = IndexedPanels::new(planes, s, chunk).expect("phase planes have a table");
        let n = chunk.ncols(s);
        let rows_per_channel = table.taps * n;
        assert!(
            dcols.len() >= s.c * rows_per_channel,
            "patch gradients out of bounds"
        );
        let dxp = super::SharedMut(dxp);
        let run = |chans: std::ops::Range<usize>, rows: &[f32]| {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX-512F was detected; `dxp` holds the planes `table` was built for (the
            // caller's contract), and each call adds only into its own channels' blocks.
            unsafe {
                table.scatter_avx512(rows, n, chans, dxp.get())
            };
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (rows, chans, dxp, &table);
        };
        if !parallel || rows_per_channel == 0 {
            run(0..s.c, dcols);
            return true;
        }
        use rayon::prelude::*;
        let per = super::channels_per_group(s);
        dcols[..s.c * rows_per_channel]
            .par_chunks(per * rows_per_channel)
            .enumerate()
            .for_each(|(g, rows)| run(g * per..((g + 1) * per).min(s.c), rows));
        true
    }

    /// A source of forward patch panels that [`Transposed`] builds its blocks from.
    trait PanelSource: Sync {
        /// Prefetches what rows `pc..pc + kc` of panel `j` read.
        fn prefetch(&self, pc: usize, kc: usize, j: usize);
        /// Writes rows `pc..pc + kc` of panel `j` to `dst` (kc x PANEL_WIDTH, every element).
        ///
        /// # Safety
        /// AVX-512F must be present; `dst` valid for `kc * PANEL_WIDTH` writes.
        #[cfg(target_arch = "x86_64")]
        unsafe fn copy(&self, pc: usize, kc: usize, j: usize, dst: *mut f32);
    }

    impl PanelSource for Panels<'_> {
        fn prefetch(&self, pc: usize, kc: usize, j: usize) {
            #[cfg(target_arch = "x86_64")]
            Panels::prefetch(self, pc, kc, j);
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (pc, kc, j);
        }

        #[cfg(target_arch = "x86_64")]
        unsafe fn copy(&self, pc: usize, kc: usize, j: usize, dst: *mut f32) {
            // SAFETY: the caller's contract.
            unsafe { self.copy_avx512(pc, kc, j, dst) }
        }
    }

    impl PanelSource for IndexedPanels<'_> {
        fn prefetch(&self, _pc: usize, _kc: usize, _j: usize) {}

        #[cfg(target_arch = "x86_64")]
        unsafe fn copy(&self, pc: usize, kc: usize, j: usize, dst: *mut f32) {
            // SAFETY: the caller's contract.
            unsafe { self.pack_avx512(pc, kc, j, dst) }
        }
    }

    /// B = columns `k0..` of the chunk's patch matrix transposed (chunk columns x K), for dW
    /// (+)= dY · patches^T: each requested panel is built from 32 x 32 blocks of forward panels,
    /// transposed in registers, so the weight gradient needs no patch matrix either.
    struct Transposed<P> {
        panels: P,
        k0: usize,
    }

    /// A 32 x 32 block of one forward panel, aligned for vector loads; left uninitialised
    /// (each copy writes the rows the transpose then reads).
    #[repr(align(64))]
    struct Block(std::mem::MaybeUninit<[f32; PANEL_WIDTH * PANEL_WIDTH]>);

    impl<P: PanelSource> PackB for Transposed<P> {
        unsafe fn pack(&self, pc: usize, kc: usize, j: usize, nr: usize, dst: *mut f32) {
            #[cfg(target_arch = "x86_64")]
            {
                // Rows pc.. of B are chunk columns; forward panels start on PANEL_WIDTH
                // columns, and the GEMM's depth blocks start on multiples of its KC.
                assert_eq!(
                    pc % PANEL_WIDTH,
                    0,
                    "dW panel rows must start on a forward panel"
                );
                // Every source row of the whole panel first, so the misses overlap.
                let j = self.k0 + j;
                for q in (0..kc).step_by(PANEL_WIDTH) {
                    self.panels.prefetch(j, nr, pc + q);
                }
                let mut block = Block(std::mem::MaybeUninit::uninit());
                let bp = block.0.as_mut_ptr().cast::<f32>();
                let mut q = 0;
                while q < kc {
                    let rows = PANEL_WIDTH.min(kc - q);
                    // SAFETY: AVX-512F is present on this path; the block holds nr <=
                    // PANEL_WIDTH rows of PANEL_WIDTH floats, all written by the copy before
                    // the transpose reads them (it loads only rows < nr); `dst` is the caller's
                    // kc x PANEL_WIDTH panel and rows q.. + rows lie inside it.
                    unsafe {
                        self.panels.copy(j, nr, pc + q, bp);
                        transpose_panel(bp, PANEL_WIDTH, nr, rows, dst.add(q * PANEL_WIDTH));
                    }
                    q += PANEL_WIDTH;
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (pc, kc, j, nr, dst);
        }
    }

    #[cfg(test)]
    mod tests {
        use super::super::{patch_copy, phase_split, CmGeometry};
        use super::*;

        /// The gathered panels of the flipped weight hold the definition's values: every
        /// panel height, short row tails, and depth blocks starting inside a tap group.
        #[test]
        #[cfg(target_arch = "x86_64")]
        fn gathered_flipped_panels_equal_the_definition() {
            if !super::super::super::sgemm::has_fast_path() {
                eprintln!("no AVX-512: the gathered panels do not exist here");
                return;
            }
            let (o, c, taps) = (7, 29, 9);
            let w: Vec<f32> = (0..o * c * taps).map(|i| i as f32 * 0.5 - 3.0).collect();
            for (row0, rows, height, pc, kc) in [
                (0, 12, 12, 0, 63),
                (12, 12, 12, 5, 40),
                (24, 5, 8, 17, 30),
                (24, 3, 4, 0, 1),
                (28, 1, 4, 62, 1),
            ] {
                let spot = PanelSpot {
                    row0,
                    rows,
                    height,
                    pc,
                    kc,
                };
                let mut want = vec![f32::NAN; height * kc];
                let mut got = vec![f32::NAN; height * kc];
                // SAFETY: a slice of initialised f32 viewed as MaybeUninit (same layout), for
                // the definition to write.
                let want_u =
                    unsafe { std::slice::from_raw_parts_mut(want.as_mut_ptr().cast(), want.len()) };
                flipped_panel(&w, c, taps, spot, want_u);
                // SAFETY: `got` holds height x kc floats; the spots read rows and taps inside
                // the 7 x 29 x 9 weight; AVX-512F is present.
                unsafe { flipped_panel_avx512(&w, c, taps, spot, got.as_mut_ptr()) };
                assert!(
                    got.iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{spot:?}"
                );
                // Row 0 of the panel: tap taps - 1 - t of input channel row0 + i.
                let (oo, t) = (pc / taps, pc % taps);
                for i in 0..rows {
                    assert_eq!(want[i], w[(oo * c + row0 + i) * taps + taps - 1 - t]);
                }
                assert!(want[rows..height].iter().all(|&v| v == 0.0));
            }
        }

        /// Every panel row from the table (shifted loads or gathers) holds the bits copying
        /// runs gives, on every chunk shape: whole items, row chunks starting mid-item, one
        /// chunk of all columns, a phase-split strided input, 3-D kernels and tail panels.
        #[test]
        fn indexed_panels_equal_the_copied_runs() {
            if !super::super::super::sgemm::has_fast_path() {
                eprintln!("no AVX-512: the indexed panels do not exist here");
                return;
            }
            // Which source the table uses: shifted loads, gathers, or none (copied runs).
            const SHIFT: Option<bool> = Some(true);
            const GATHER: Option<bool> = Some(false);
            const COPY: Option<bool> = None;
            // (kernel, stride, pad, input (C, B, T, H, W), expected source)
            let cases = [
                ([1, 3, 3], [1, 1, 1], [0, 1, 1], [9, 3, 1, 8, 5], SHIFT),
                ([3, 1, 1], [1, 1, 1], [1, 0, 0], [8, 2, 4, 3, 7], SHIFT),
                ([3, 3, 3], [1, 1, 1], [1, 1, 1], [8, 2, 3, 6, 5], SHIFT),
                // Strided, read from phase planes: shifted loads whatever the row length.
                ([1, 3, 3], [1, 2, 2], [0, 1, 1], [10, 3, 1, 16, 10], SHIFT),
                ([1, 1, 1], [2, 2, 2], [0, 0, 0], [12, 2, 4, 7, 7], SHIFT),
                ([1, 3, 3], [1, 3, 3], [0, 1, 1], [8, 2, 1, 17, 20], SHIFT),
                ([3, 7, 7], [1, 2, 2], [1, 3, 3], [8, 2, 3, 13, 30], SHIFT),
                ([1, 3, 3], [1, 2, 2], [0, 1, 1], [8, 1, 1, 30, 30], SHIFT),
                // Strided without planes (a stride along T or H only, or an output axis
                // shorter than ceil(input / stride)): rows of 11 columns gather; 12 and more,
                // and few channels, copy runs.
                ([3, 1, 1], [2, 1, 1], [1, 0, 0], [8, 2, 5, 4, 4], GATHER),
                ([3, 1, 1], [2, 1, 1], [1, 0, 0], [8, 2, 5, 4, 14], COPY),
                ([1, 2, 2], [1, 2, 2], [0, 0, 0], [8, 1, 1, 6, 23], GATHER),
                ([1, 2, 2], [1, 2, 2], [0, 0, 0], [8, 1, 1, 6, 25], COPY),
                ([1, 3, 3], [1, 2, 2], [0, 1, 1], [4, 2, 1, 9, 30], COPY),
                ([1, 3, 3], [1, 1, 1], [0, 1, 1], [4, 2, 1, 8, 5], COPY),
                // Stride 1 without padding: not same-size, so short rows gather and long
                // rows copy.
                ([1, 3, 3], [1, 1, 1], [0, 0, 0], [8, 2, 1, 7, 9], GATHER),
                ([1, 3, 3], [1, 1, 1], [0, 0, 0], [8, 1, 1, 7, 20], COPY),
            ];
            for (kernel, stride, pad, dims, source) in cases {
                let g = CmGeometry {
                    kernel,
                    stride,
                    pad,
                };
                let s = Sizes::new(dims, 7, g).expect("valid case");
                let len: usize = dims.iter().product();
                let x: Vec<f32> = (0..len).map(|i| i as f32 + 1.0).collect();
                // The table reads what the convolution packs from; the runs it is checked
                // against read the row-phase split (or the plain input).
                let copy = patch_copy(&x, &s);
                let input = PatchInput::of(&x, copy.as_ref());
                let rows = phase_split(&x, &s).map(|v| (v, InputLayout::RowPhases));
                let runs_input = PatchInput::of(&x, rows.as_ref());
                let mut chunks: Vec<Chunk> = s.tasks().into_iter().flatten().collect();
                chunks.push(Chunk::all(&s));
                // A chunk of rows starting mid-item, in the last item.
                if s.rows_per_item() > 2 {
                    chunks.push(Chunk {
                        b0: s.b - 1,
                        items: 1,
                        r0: 1,
                        nrows: s.rows_per_item() - 2,
                    });
                }
                let k = s.k();
                for chunk in &chunks {
                    let table = IndexedPanels::new(input, &s, chunk);
                    assert_eq!(
                        table
                            .as_ref()
                            .map(|t| matches!(t.source, Source::Shift { .. })),
                        source,
                        "{g:?} {dims:?}: source"
                    );
                    let Some(table) = table else { continue };
                    let runs = Panels::new(runs_input, &s, chunk);
                    let n = chunk.ncols(&s);
                    let mut a = vec![f32::NAN; k * PANEL_WIDTH];
                    let mut b = vec![-1.0f32; k * PANEL_WIDTH];
                    for j in (0..n).step_by(PANEL_WIDTH) {
                        let nr = PANEL_WIDTH.min(n - j);
                        // Two depth blocks, the second starting mid-channel.
                        for (pc, kc) in [(0, k / 2), (k / 2, k - k / 2)] {
                            // SAFETY: AVX-512 is present; both buffers hold K panel rows.
                            unsafe {
                                table.pack(pc, kc, j, nr, a.as_mut_ptr().add(pc * PANEL_WIDTH));
                                runs.pack(pc, kc, j, nr, b.as_mut_ptr().add(pc * PANEL_WIDTH));
                            }
                        }
                        let same = a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits());
                        assert!(same, "{g:?} {dims:?} {chunk:?} panel {j}: rows differ");
                    }
                }
            }
        }
    }
}

/// Copies the patches of output rows `r0..r0 + nrows` of batch item `b` into columns
/// `col_off..` of `cols` (K rows of length `n`). Positions in the padding read as zero.
#[allow(clippy::too_many_arguments)]
fn gather<T: ConvElem>(
    x: &[T],
    s: &Sizes,
    b: usize,
    rows: (usize, usize),
    chans: std::ops::Range<usize>,
    cols: &mut [T],
    n: usize,
    col_off: usize,
) {
    for_each_run(s, b, rows, chans, |k, r, count, src| {
        let at = k * n + col_off;
        let dst = &mut cols[at + r * s.wo..at + (r + count) * s.wo];
        match src {
            None => dst.fill(T::default()),
            Some((off, _)) if count > 1 => dst.copy_from_slice(&x[off..off + count * s.w]),
            Some((off, kk)) => gather_row(&x[off..off + s.w], s, kk, dst),
        }
    });
}

/// Adds the patch gradients `cols` of output rows `r0..r0 + nrows` of batch item `b` back into
/// `dx` (the adjoint of [`gather`]).
/// `dx` is shared between tasks that scatter into disjoint parts of it (see `Sizes::tasks`), so
/// it is a raw pointer: each run makes a slice of exactly the input rows it adds into.
#[allow(clippy::too_many_arguments)]
fn scatter<T: ConvElem>(
    cols: &[T],
    s: &Sizes,
    b: usize,
    rows: (usize, usize),
    chans: std::ops::Range<usize>,
    dx: SharedMut<T>,
    dx_len: usize,
    n: usize,
    col_off: usize,
) {
    for_each_run(s, b, rows, chans, |k, r, count, src| {
        let at = k * n + col_off;
        let row = &cols[at + r * s.wo..at + (r + count) * s.wo];
        let Some((off, kk)) = src else {
            return;
        };
        let len = if count > 1 { count * s.w } else { s.w };
        assert!(off + len <= dx_len, "col2im out of bounds");
        // SAFETY: in bounds (checked above); no other task writes these input rows, and no
        // other reference to them is alive while this one is.
        let dst = unsafe { std::slice::from_raw_parts_mut(dx.get().add(off), len) };
        if count > 1 {
            for (d, g) in dst.iter_mut().zip(row) {
                *d += *g;
            }
        } else {
            scatter_row(row, s, kk, dst);
        }
    });
}

/// Calls `f(k, r, count, src)` for runs of output rows `r..r + count` (relative to `r0`) of
/// batch item `b` and patch row k (counted from the first patch row of channel `chans.start`). `src` is the input offset of the first row (length W) the
/// taps read and the tap's column offset kw, or `None` for rows in the T/H padding. Rows are
/// merged into one run only when they are all padding, or when each copies a whole input row
/// and the input rows are consecutive (1x1 spatial taps), so a run is one memcpy. Gather and
/// scatter share this walk, so they are adjoint by construction.
#[inline]
fn for_each_run(
    s: &Sizes,
    b: usize,
    (r0, nrows): (usize, usize),
    chans: std::ops::Range<usize>,
    mut f: impl FnMut(usize, usize, usize, Option<(usize, usize)>),
) {
    let [kt, kh, kw] = s.g.kernel;
    let sw = s.g.stride[2];
    let taps = kt * kh;
    let mut table = vec![usize::MAX; nrows * taps];
    row_table(s, b, (r0, nrows), &mut table);
    let channel = s.b * s.t * s.h * s.w;
    let whole_row = |kk: usize| sw == 1 && s.wo == s.w && valid_cols(s, kk) == (0, s.wo);
    let mut k = 0;
    for ch in chans {
        for tap in 0..taps {
            for kk in 0..kw {
                let merge = whole_row(kk);
                let mut r = 0;
                while r < nrows {
                    let o = table[r * taps + tap];
                    let mut e = r + 1;
                    if o == usize::MAX {
                        while e < nrows && table[e * taps + tap] == usize::MAX {
                            e += 1;
                        }
                        f(k, r, e - r, None);
                    } else {
                        if merge {
                            while e < nrows && table[e * taps + tap] == o + (e - r) * s.w {
                                e += 1;
                            }
                        }
                        f(k, r, e - r, Some((ch * channel + o, kk)));
                    }
                    r = e;
                }
                k += 1;
            }
        }
    }
}

/// Fills `table[r * taps + i * kh + j]` (`nrows * kt * kh` entries) with the offset, within
/// one channel's (B, T, H, W) block, of the input row that output row `r0 + r` of batch item
/// `b` reads at temporal/vertical tap (i, j); `usize::MAX` in the T/H padding.
fn row_table(s: &Sizes, b: usize, (r0, nrows): (usize, usize), table: &mut [usize]) {
    let [kt, kh, _] = s.g.kernel;
    let [st, sh, _] = s.g.stride;
    let [pt, ph, _] = s.g.pad;
    let taps = kt * kh;
    table[..nrows * taps].fill(usize::MAX);
    for r in 0..nrows {
        let (to, ho) = ((r0 + r) / s.ho, (r0 + r) % s.ho);
        for i in 0..kt {
            let Some(ti) = (to * st + i).checked_sub(pt).filter(|&v| v < s.t) else {
                continue;
            };
            for j in 0..kh {
                if let Some(hi) = (ho * sh + j).checked_sub(ph).filter(|&v| v < s.h) {
                    table[r * taps + i * kh + j] = ((b * s.t + ti) * s.h + hi) * s.w;
                }
            }
        }
    }
}

/// Output columns `ow` whose tap `kk` reads inside the row: `lo..hi`.
#[inline]
fn valid_cols(s: &Sizes, kk: usize) -> (usize, usize) {
    let (sw, pw) = (s.g.stride[2], s.g.pad[2]);
    // ow * sw + kk - pw in [0, W)  <=>  ow >= ceil((pw - kk) / sw), ow * sw < W + pw - kk.
    let lo = pw.saturating_sub(kk).div_ceil(sw).min(s.wo);
    let hi = if s.w + pw > kk {
        (s.w + pw - kk).div_ceil(sw).min(s.wo)
    } else {
        0
    };
    (lo, hi.max(lo))
}

#[inline]
fn gather_row<T: ConvElem>(src: &[T], s: &Sizes, kk: usize, dst: &mut [T]) {
    let (lo, hi) = valid_cols(s, kk);
    let sw = s.g.stride[2];
    dst[..lo].fill(T::default());
    dst[hi..].fill(T::default());
    if hi > lo {
        let first = lo * sw + kk - s.g.pad[2];
        if sw == 1 {
            dst[lo..hi].copy_from_slice(&src[first..first + hi - lo]);
        } else {
            T::copy_strided(&src[first..], sw, &mut dst[lo..hi]);
        }
    }
}

#[inline]
fn scatter_row<T: ConvElem>(row: &[T], s: &Sizes, kk: usize, dst: &mut [T]) {
    let (lo, hi) = valid_cols(s, kk);
    let sw = s.g.stride[2];
    if hi > lo {
        let first = lo * sw + kk - s.g.pad[2];
        if sw == 1 {
            for (g, d) in row[lo..hi].iter().zip(&mut dst[first..first + hi - lo]) {
                *d += *g;
            }
        } else {
            T::add_strided(&row[lo..hi], sw, &mut dst[first..]);
        }
    }
}

/// A raw pointer that rayon tasks may share: every task writes a disjoint region.
#[derive(Clone, Copy)]
struct SharedMut<T>(*mut T);
// SAFETY: used only to write disjoint regions of one buffer from different threads.
unsafe impl<T> Send for SharedMut<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    fn get(self) -> *mut T {
        self.0
    }
}

/// C (m x n) = or += A B with the m rows split across rayon threads: for chunks too few to
/// keep every thread busy (deep layers have small maps but many channels).
#[allow(clippy::too_many_arguments)]
fn gemm_split_m<T: ConvElem>(
    m: usize,
    n: usize,
    k: usize,
    (a, a_rs, a_cs): (&[T], usize, usize),
    b: (&[T], usize, usize),
    c: SharedMut<T>,
    ldc: usize,
    accumulate: bool,
) {
    let threads = rayon::current_num_threads().max(1);
    let block = m.div_ceil(threads).next_multiple_of(16).max(16);
    (0..m.div_ceil(block)).into_par_iter().for_each(|i| {
        let m0 = i * block;
        // SAFETY: rows m0..m0 + block of C belong to this task only.
        let c = unsafe { c.get().add(m0 * ldc) };
        T::gemm(
            block.min(m - m0),
            n,
            k,
            (&a[m0 * a_rs..], a_rs, a_cs),
            b,
            c,
            ldc,
            accumulate,
        );
    });
}

/// Runs `f(first, count)` over blocks of `n` rows or columns (multiples of `unit`), one block
/// per rayon thread, and reports whether every call did its part (an implicit-GEMM call returns
/// `false` without a fast path).
fn split_blocks(n: usize, unit: usize, f: impl Fn(usize, usize) -> bool + Sync) -> bool {
    let bl = split_block(n, unit);
    (0..n.div_ceil(bl))
        .into_par_iter()
        .map(|i| f(i * bl, bl.min(n - i * bl)))
        .all(|ok| ok)
}

/// Rows or columns per block of [`split_blocks`]: an even share per rayon thread, rounded up
/// to `unit`.
fn split_block(n: usize, unit: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    n.div_ceil(threads).next_multiple_of(unit).max(unit)
}

/// The row unit of forward GEMMs split across threads (a packed weight's segments follow it).
const ROW_UNIT: usize = 16;

/// Whether GEMMs may pack patches straight from the input (default): the forward, the twin
/// convolution of the input gradient and the weight gradient. The explicit patch matrix stays
/// available for comparison (`AV_MODELS_EXPLICIT_PATCHES=1`).
fn implicit_patches() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("AV_MODELS_EXPLICIT_PATCHES").is_none())
}

/// Whether there are too few chunks to spread across threads.
fn few(chunks: usize) -> bool {
    chunks < 2 * rayon::current_num_threads()
}

/// y (O, B*T'*H'*W') = W (O, K) x patches.
pub(crate) fn forward<T: ConvElem>(x: &[T], w: &[T], s: &Sizes) -> Vec<T> {
    forward_with(x, w, None, s, implicit_patches()).0
}

/// The copy of a strided convolution's input its GEMMs packed patches from (see
/// [`patch_copy`]), kept by a caller that runs the backward pass later: [`backward_from`]
/// then packs the weight gradient's patches from it instead of copying the input again.
pub(crate) type PatchCopy<T> = Option<(Vec<T>, InputLayout)>;

/// [`forward`], also returning the input copy it packed from where the weight gradient packs
/// from it too (spatial kernels; temporal and pointwise ones gather plain rows there).
pub(crate) fn forward_keeping<T: ConvElem>(x: &[T], w: &[T], s: &Sizes) -> (Vec<T>, PatchCopy<T>) {
    let (y, copy) = forward_with(x, w, None, s, implicit_patches());
    (y, copy.filter(|_| implicit_dw(s)))
}

/// Whether the weight gradient packs its patches straight from the input (or its copy):
/// spatial kernels. Temporal and pointwise kernels gather whole input rows, a plain copy
/// that packs faster than transposing the implicit panels.
fn implicit_dw(s: &Sizes) -> bool {
    implicit_patches() && s.g.kernel[1] * s.g.kernel[2] > 1
}

/// [`forward`], packing patches straight from `x` when `implicit` (and the path exists); with
/// the input copy it packed from. With `flip_of`, the weight is [`flip_transpose`]`(w,
/// flip_of)` (`s` is then `flip_of`'s input-gradient twin), which a packed weight reads
/// straight from `w`.
fn forward_with<T: ConvElem>(
    x: &[T],
    w: &[T],
    flip_of: Option<&Sizes>,
    s: &Sizes,
    implicit: bool,
) -> (Vec<T>, PatchCopy<T>) {
    let (k, p) = (s.k(), s.cols());
    // No zero-fill: the GEMMs below overwrite every element (the chunks cover all P columns
    // and each GEMM writes all O rows of its columns); the length is set once they have.
    let mut y: Vec<T> = Vec::with_capacity(s.o * p);
    let out = SharedMut(y.as_mut_ptr());
    let tasks = s.tasks();
    let small = s.small_map(&tasks);
    let chunks: Vec<Chunk> = tasks.into_iter().flatten().collect();
    debug_assert_eq!(chunks.iter().map(|c| c.ncols(s)).sum::<usize>(), p);
    // Patches packed straight from x where the element type and CPU allow it (f32, AVX-512).
    let probe = |c: &Chunk| {
        T::gemm_patches(
            0,
            (Weights::Rows(w), 0),
            PatchInput::plain(x),
            s,
            c,
            out.get(),
            p,
        )
    };
    let implicit = implicit && chunks.first().is_some_and(probe);
    // A strided convolution packs from its input split into stride phases (see `patch_copy`).
    let copy = if implicit { patch_copy(x, s) } else { None };
    let input = PatchInput::of(x, copy.as_ref());
    // Small maps (a few chunks of whole items, run one after another with the weight rows
    // split across threads): without a patch matrix to keep small, one chunk of all columns
    // streams the weight once instead of once per chunk.
    let chunks = if implicit && small {
        vec![Chunk::all(s)]
    } else {
        chunks
    };
    // The weight, packed once for all chunks and threads where the implicit path reads packed
    // weights: in segments of the rows each thread takes when the chunks run one after
    // another with their rows split, else whole.
    let segment = if few(chunks.len()) {
        split_block(s.o, ROW_UNIT)
    } else {
        s.o
    };
    // Only where several chunks read it: a GEMM of one chunk packs each block of its rows
    // right before use, hot in cache, where a weight packed ahead would round-trip through
    // memory (the deep layers' are megabytes).
    let packed = (implicit && chunks.len() > 1)
        .then(|| T::pack_weights(w, s, flip_of, segment))
        .flatten();
    // The explicit-patch GEMMs read plain rows, so they get the flipped weight built; the
    // implicit ones gather it (with `implicit`, `w` stays the weight as given).
    let flipped = flip_of.filter(|_| !implicit).map(|f| flip_transpose(w, f));
    let w = flipped.as_deref().unwrap_or(w);
    let weights = match (&packed, flip_of) {
        (Some(pa), _) => Weights::Packed(pa),
        (None, Some(of)) if implicit => Weights::Flipped { w, of },
        _ => Weights::Rows(w),
    };
    let run = |cols: &mut Vec<T>, c: &Chunk, split: bool| {
        let n = c.ncols(s);
        // SAFETY: columns col_start.. + n of every output row belong to this chunk only, and
        // lie inside the O x P buffer.
        let dst = SharedMut(unsafe { out.get().add(c.col_start(s)) });
        if implicit {
            let block = |m0: usize, rows: usize| {
                // SAFETY: rows m0.. of the chunk's columns, inside the O x P buffer.
                let c_rows = unsafe { dst.get().add(m0 * p) };
                T::gemm_patches(rows, (weights, m0), input, s, c, c_rows, p)
            };
            let done = if split && small {
                T::gemm_patches_rows_split(s.o, weights, input, s, c, dst.get(), p)
            } else if split {
                split_blocks(s.o, ROW_UNIT, block)
            } else {
                block(0, s.o)
            };
            assert!(done, "conv forward: the implicit GEMM path vanished");
            return;
        }
        cols.resize(k * n, T::default());
        c.gather(x, s, cols, split);
        if split {
            gemm_split_m(s.o, n, k, (w, k, 1), (cols, n, 1), dst, p, false);
        } else {
            T::gemm(s.o, n, k, (w, k, 1), (cols, n, 1), dst.get(), p, false);
        }
    };
    if few(chunks.len()) {
        let mut cols = Vec::new();
        chunks.iter().for_each(|c| run(&mut cols, c, true));
    } else {
        chunks
            .par_iter()
            .for_each_init(Vec::new, |cols, c| run(cols, c, false));
    }
    // SAFETY: all `O * P` elements were written by the GEMMs above (see the comment at the
    // allocation), and the capacity is at least that.
    unsafe { y.set_len(s.o * p) };
    (y, copy)
}

/// (dx, dw) from the output gradient `dy` (O, P); dx is empty unless `need_dx`.
///
/// Where the convolution has a [`Sizes::transposed`] twin, dx is that twin's forward pass over
/// `dy` (a GEMM with depth O * taps, written straight into dx; its patches are packed from `dy`
/// on the f32 AVX-512 path); otherwise dx comes from W^T dY patch gradients scattered back
/// (col2im), whose GEMM has depth O only and whose scatter is an extra pass over K x P values.
pub(crate) fn backward<T: ConvElem>(
    x: &[T],
    w: &[T],
    dy: &[T],
    s: &Sizes,
    need_dx: bool,
) -> (Vec<T>, Vec<T>) {
    backward_from(x, None, w, dy, s, need_dx)
}

/// [`backward`], with the input copy the forward pass kept ([`forward_keeping`]), if any.
pub(crate) fn backward_from<T: ConvElem>(
    x: &[T],
    copy: Option<&(Vec<T>, InputLayout)>,
    w: &[T],
    dy: &[T],
    s: &Sizes,
    need_dx: bool,
) -> (Vec<T>, Vec<T>) {
    // Maps under 256 columns keep the scatter: the twin's weight (flipped and transposed,
    // whether built or gathered into panels) costs O * K moves, which a GEMM over so few
    // columns does not repay.
    let twin = (need_dx && s.cols() >= 256 && !scatter_dx())
        .then(|| s.transposed())
        .flatten();
    let implicit_dw = implicit_dw(s);
    match twin {
        Some(t) => {
            let dx = forward_with(dy, w, Some(s), &t, implicit_patches()).0;
            let (_, dw) = backward_scatter(x, copy, w, dy, s, false, implicit_dw);
            (dx, dw)
        }
        None => backward_scatter(x, copy, w, dy, s, need_dx, implicit_dw),
    }
}

/// Whether the input gradient always takes the col2im scatter path, for comparison
/// (`AV_MODELS_SCATTER_DX=1`).
fn scatter_dx() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("AV_MODELS_SCATTER_DX").is_some())
}

/// The weight of [`Sizes::transposed`]: (C, O, kt, kh, kw) with every kernel axis reversed.
fn flip_transpose<T: Copy + Default + Send + Sync>(w: &[T], s: &Sizes) -> Vec<T> {
    let taps: usize = s.g.kernel.iter().product();
    let row = s.o * taps;
    // Blocks of input channels: for each o the block's taps are one contiguous read of w,
    // written to one short run in each of the block's output rows. The reads for successive o
    // are C * taps apart (beyond the hardware prefetcher's reach), so each is prefetched a
    // few o ahead; up to 64 channels make each read several cache lines long, while keeping
    // at least two pieces per thread.
    let block =
        s.c.div_ceil(2 * rayon::current_num_threads().max(1))
            .clamp(16, 64);
    const AHEAD: usize = 4;
    // SAFETY: a piece holds the `n` rows of its channel block, and every (o, tap) position of
    // each row is written (o over 0..O, the row's taps in reverse).
    unsafe {
        par_init(w.len(), block * row, |blk, rows| {
            let c0 = blk * block;
            let n = rows.len() / row.max(1);
            for o in 0..s.o {
                if o + AHEAD < s.o {
                    prefetch(&w[((o + AHEAD) * s.c + c0) * taps..][..n * taps]);
                }
                let src = &w[(o * s.c + c0) * taps..][..n * taps];
                for (i, taps_in) in src.chunks_exact(taps).enumerate() {
                    let dst = &mut rows[i * row + o * taps..][..taps];
                    dst.iter_mut().zip(taps_in.iter().rev()).for_each(|(d, v)| {
                        d.write(*v);
                    });
                }
            }
        })
    }
}

/// Asks for every cache line `v` touches to be loaded (a hint; no-op off x86-64).
fn prefetch<T>(v: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let start = v.as_ptr() as usize;
        let end = start + std::mem::size_of_val(v);
        let mut line = start & !63;
        while line < end {
            // SAFETY: a prefetch never faults, whatever the address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line as *const i8) };
            line += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// [`backward`] with dx (if `need_dx`) from scattered patch gradients, and dW from patches
/// packed straight from `x` when `implicit` (and the path exists).
fn backward_scatter<T: ConvElem>(
    x: &[T],
    kept: Option<&(Vec<T>, InputLayout)>,
    w: &[T],
    dy: &[T],
    s: &Sizes,
    need_dx: bool,
    implicit: bool,
) -> (Vec<T>, Vec<T>) {
    let (k, p) = (s.k(), s.cols());
    let tasks = s.tasks();
    let split = few(tasks.len());
    // Patches packed straight from x into the weight-gradient GEMM where the element type and
    // CPU allow it (f32, AVX-512), else gathered into a patch matrix first.
    let probe = |c: &Chunk| {
        T::gemm_dw_patches(
            0,
            (dy, p),
            PatchInput::plain(x),
            s,
            c,
            std::ptr::null_mut(),
            (0, 0),
            true,
        )
    };
    let implicit = implicit && tasks.first().and_then(|t| t.first()).is_some_and(probe);
    // The forward pass's copy when it kept one (the same function of x), else a new one.
    let made = match (implicit, kept) {
        (true, None) => patch_copy(x, s),
        _ => None,
    };
    let copy = if implicit {
        kept.or(made.as_ref())
    } else {
        None
    };
    let input = PatchInput::of(x, copy);
    // With phase planes, the patch gradients go back into planes of the same layout (each
    // row one masked add per panel, not per output row), rearranged into dx at the end.
    let planes = need_dx && input.layout == InputLayout::Planes;
    let mut dxp = par_zeros(if planes { input.data.len() } else { 0 });
    let dxp_ptr = SharedMut(dxp.as_mut_ptr());
    let mut dx = par_zeros(if need_dx && !planes { x.len() } else { 0 });
    let dx_ptr = SharedMut(dx.as_mut_ptr());
    let dx_len = dx.len();
    // Small maps (a few whole-item chunks): one GEMM over all columns, its weight-gradient
    // columns split across threads, streams dY and builds each patch panel once, where a GEMM
    // per chunk would re-read the whole dW per chunk.
    let merged = implicit && s.small_map(&tasks);
    // Small maps always have too few tasks for one per thread; the merged dW lives in the
    // sequential branch below.
    debug_assert!(!merged || split);
    let dw_merged = merged.then(|| {
        // No zero-fill: the column blocks cover all K columns, and each GEMM writes (does not
        // add to) every row of its columns; the length is set once they have.
        let mut dw: Vec<T> = Vec::with_capacity(s.o * k);
        let dwp = SharedMut(dw.as_mut_ptr());
        let all = Chunk::all(s);
        let done = split_blocks(k, PANEL_WIDTH, |k0, nk| {
            T::gemm_dw_patches(s.o, (dy, p), input, s, &all, dwp.get(), (k0, nk), false)
        });
        assert!(done, "conv backward: the implicit GEMM path vanished");
        // SAFETY: all O x K elements were written above.
        unsafe { dw.set_len(s.o * k) };
        dw
    });
    // One task: every chunk of it in order, accumulating into `dw`. The patch buffers are the
    // caller's, reused across its tasks: every element is overwritten before it is read (the
    // gather writes all K x n patches, the GEMM all of dcols), so they are filled only when
    // they grow.
    let run = |task: &Vec<Chunk>, dw: &mut Vec<T>, (cols, dcols): &mut (Vec<T>, Vec<T>)| {
        for c in task {
            let n = c.ncols(s);
            let g = &dy[c.col_start(s)..];
            // dW += dY_chunk (O x n, row stride P) x cols^T (n x K).
            let dwp = SharedMut(dw.as_mut_ptr());
            if merged {
                // Done above.
            } else if implicit {
                let rows = |m0: usize, rows: usize| {
                    // SAFETY: rows m0.. of dW (K each) belong to this call only.
                    let dw_rows = unsafe { dwp.get().add(m0 * k) };
                    T::gemm_dw_patches(rows, (&g[m0 * p..], p), input, s, c, dw_rows, (0, k), true)
                };
                let done = if split {
                    split_blocks(s.o, 16, rows)
                } else {
                    rows(0, s.o)
                };
                assert!(done, "conv backward: the implicit GEMM path vanished");
            } else {
                cols.resize(k * n, T::default());
                c.gather(x, s, cols, split);
                if split {
                    gemm_split_m(s.o, k, n, (g, p, 1), (&cols[..], 1, n), dwp, k, true);
                } else {
                    T::gemm(s.o, k, n, (g, p, 1), (&cols[..], 1, n), dwp.get(), k, true);
                }
            }
            if need_dx {
                // dcols = W^T (K x O) x dY_chunk (O x n).
                dcols.resize(k * n, T::default());
                let dcp = SharedMut(dcols.as_mut_ptr());
                if split {
                    gemm_split_m(k, n, s.o, (w, 1, k), (g, p, 1), dcp, n, false);
                } else {
                    T::gemm(k, n, s.o, (w, 1, k), (g, p, 1), dcp.get(), n, false);
                }
                if planes {
                    // SAFETY: `dxp` holds the planes of `input`; the chunks running at once
                    // (one task per thread) read disjoint input positions (see `Sizes::tasks`).
                    let done = unsafe {
                        T::scatter_planes(&dcols[..k * n], input, s, c, dxp_ptr.get(), split)
                    };
                    assert!(done, "conv backward: the phase-plane scatter vanished");
                } else {
                    c.scatter(&dcols[..k * n], s, (dx_ptr, dx_len), split);
                }
            }
        }
    };
    let dw = if split {
        let mut dw = dw_merged.unwrap_or_else(|| par_zeros(s.o * k));
        let mut bufs = (Vec::new(), Vec::new());
        tasks.iter().for_each(|t| run(t, &mut dw, &mut bufs));
        dw
    } else {
        // One fixed group of consecutive tasks per thread, summed in group order: the weight
        // gradient is then bit-reproducible for a given thread count (a work-stealing fold
        // would group, and so round, differently from run to run).
        let groups = rayon::current_num_threads().clamp(1, tasks.len().max(1));
        let per = tasks.len().div_ceil(groups).max(1);
        let partial: Vec<Vec<T>> = tasks
            .par_chunks(per)
            .map(|group| {
                let mut dw = vec![T::default(); s.o * k];
                let mut bufs = (Vec::new(), Vec::new());
                group.iter().for_each(|t| run(t, &mut dw, &mut bufs));
                dw
            })
            .collect();
        let mut partial = partial.into_iter();
        let mut dw = partial.next().unwrap_or_else(|| par_zeros(s.o * k));
        for b in partial {
            // Element-wise, so the same sums in the same order on any split.
            dw.par_chunks_mut(1 << 14)
                .zip(b.par_chunks(1 << 14))
                .for_each(|(d, b)| d.iter_mut().zip(b).for_each(|(x, y)| *x += *y));
        }
        dw
    };
    if planes {
        dx = from_phase_planes(&dxp, s);
    }
    (dx, dw)
}

/// The custom op: (x (C, B, T, H, W), w (O, C, kt, kh, kw)) -> y (O, B, T', H', W').
struct ConvCm {
    s: Sizes,
    /// Whether the input needs a gradient (not for a network's first layer).
    need_dx: bool,
}

impl CustomOp2 for ConvCm {
    fn name(&self) -> &'static str {
        "conv3d-channel-major"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let s = &self.s;
        let y = match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                CpuStorage::F32(forward::<f32>(slice(s1, l1, OP)?, slice(s2, l2, OP)?, s))
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                CpuStorage::F64(forward::<f64>(slice(s1, l1, OP)?, slice(s2, l2, OP)?, s))
            }
            _ => {
                return Err(candle_core::Error::UnsupportedDTypeForOp(
                    s1.dtype(),
                    "conv3d-channel-major",
                ))
            }
        };
        Ok((y, Shape::from((s.o, s.b, s.to, s.ho, s.wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (gs, gl) = grad.storage_and_layout();
        let (dx, dw) = match (&*xs, &*ws, &*gs) {
            (Storage::Cpu(xc), Storage::Cpu(wc), Storage::Cpu(gc)) => match (xc, wc, gc) {
                (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => {
                    self.grads::<f32>([(xc, xl), (wc, wl), (gc, gl)], x, w)?
                }
                (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => {
                    self.grads::<f64>([(xc, xl), (wc, wl), (gc, gl)], x, w)?
                }
                _ => {
                    return Err(candle_core::Error::UnsupportedDTypeForOp(
                        x.dtype(),
                        "conv3d-channel-major backward",
                    ))
                }
            },
            _ => {
                return Err(candle_core::Error::Msg(
                    "conv3d-channel-major: CPU tensors only".into(),
                ))
            }
        };
        Ok((dx, Some(dw)))
    }
}

impl ConvCm {
    /// (dx if needed, dw) from the (x, w, grad) storages, all of element type T.
    fn grads<T: ConvElem>(
        &self,
        [(xc, xl), (wc, wl), (gc, gl)]: [(&CpuStorage, &Layout); 3],
        x: &Tensor,
        w: &Tensor,
    ) -> Result<(Option<Tensor>, Tensor)> {
        let (dx, dw) = backward::<T>(
            slice(xc, xl, OP)?,
            slice(wc, wl, OP)?,
            slice(gc, gl, OP)?,
            &self.s,
            self.need_dx,
        );
        let dx = self
            .need_dx
            .then(|| Tensor::from_vec(dx, x.shape(), x.device()))
            .transpose()?;
        Ok((dx, Tensor::from_vec(dw, w.shape(), w.device())?))
    }
}

/// Whether [`conv3d_cm`] runs the custom op (contiguous f32/f64 CPU tensors) rather than
/// falling back to the layout-changing path.
pub fn conv_cm_applies(x: &Tensor) -> bool {
    super::ops::unfold_op_applies(x)
}

/// Convolves a channel-major (C, B, T, H, W) tensor with a PyTorch (O, C, kt, kh, kw) weight,
/// returning channel-major (O, B, T', H', W'). The weight must match the input's channels and
/// the geometry's kernel.
pub fn conv3d_cm(x: &Tensor, w: &Tensor, g: CmGeometry) -> Result<Tensor> {
    let (c, b, t, h, wd) = x.dims5()?;
    let (o, wc, kt, kh, kw) = w.dims5()?;
    if wc != c || [kt, kh, kw] != g.kernel || g.stride.contains(&0) {
        return Err(crate::error::bad_input(
            "conv3d input",
            format!(
                "weight {:?} does not fit channel-major input {:?} and {g:?}",
                w.dims(),
                x.dims()
            ),
        ));
    }
    let s = Sizes::new([c, b, t, h, wd], o, g).ok_or_else(|| {
        crate::error::bad_input(
            "conv3d input",
            format!("shape {:?} too small for {g:?}", x.dims()),
        )
    })?;
    let need_dx = x.track_op();
    x.contiguous()?
        .apply_op2(&w.contiguous()?, ConvCm { s, need_dx })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// Direct 3-D convolution of (B, C, T, H, W) by the definition.
    fn naive(x: &Tensor, w: &Tensor, g: CmGeometry) -> Result<Tensor> {
        let (b, c, t, h, wd) = x.dims5()?;
        let (o, _, kt, kh, kw) = w.dims5()?;
        let out = |len: usize, k: usize, s: usize, p: usize| (len + 2 * p - k) / s + 1;
        let (to, ho, wo) = (
            out(t, kt, g.stride[0], g.pad[0]),
            out(h, kh, g.stride[1], g.pad[1]),
            out(wd, kw, g.stride[2], g.pad[2]),
        );
        let xv: Vec<f64> = x.flatten_all()?.to_vec1()?;
        let wv: Vec<f64> = w.flatten_all()?.to_vec1()?;
        let mut y = vec![0.0; b * o * to * ho * wo];
        for bi in 0..b {
            for oc in 0..o {
                for (ot, oh, ow) in (0..to)
                    .flat_map(|a| (0..ho).flat_map(move |bb| (0..wo).map(move |cc| (a, bb, cc))))
                {
                    let mut acc = 0.0;
                    for ic in 0..c {
                        for i in 0..kt {
                            for j in 0..kh {
                                for l in 0..kw {
                                    let ti = (ot * g.stride[0] + i) as isize - g.pad[0] as isize;
                                    let hi = (oh * g.stride[1] + j) as isize - g.pad[1] as isize;
                                    let wi = (ow * g.stride[2] + l) as isize - g.pad[2] as isize;
                                    if ti < 0 || hi < 0 || wi < 0 {
                                        continue;
                                    }
                                    let (ti, hi, wi) = (ti as usize, hi as usize, wi as usize);
                                    if ti >= t || hi >= h || wi >= wd {
                                        continue;
                                    }
                                    acc += xv[(((bi * c + ic) * t + ti) * h + hi) * wd + wi]
                                        * wv[(((oc * c + ic) * kt + i) * kh + j) * kw + l];
                                }
                            }
                        }
                    }
                    y[(((bi * o + oc) * to + ot) * ho + oh) * wo + ow] = acc;
                }
            }
        }
        Tensor::from_vec(y, (b, o, to, ho, wo), x.device())
    }

    fn run(x: &Tensor, w: &Tensor, g: CmGeometry, out: [usize; 3]) -> Result<Tensor> {
        let xc = x.permute((1, 0, 2, 3, 4))?;
        let _ = out;
        conv3d_cm(&xc, w, g)?.permute((1, 0, 2, 3, 4))
    }

    /// Patches packed straight from the input give the same GEMM operands as the patch
    /// matrix, so the outputs are bit-identical (forward, and dW transposed): strided, padded,
    /// 1x1 and full kernels, on the one-chunk-per-thread and the rows-split paths. Small maps
    /// merged into one GEMM sum in another order and are compared to 1e-5.
    #[test]
    fn implicit_patches_equal_the_patch_matrix() {
        let cases = [
            ([1, 7, 7], [1, 2, 2], [0, 3, 3], [3, 2, 4, 30, 26], 45),
            ([3, 1, 1], [1, 1, 1], [1, 0, 0], [16, 3, 4, 14, 14], 40),
            ([3, 1, 1], [2, 1, 1], [1, 0, 0], [8, 2, 5, 7, 7], 24),
            ([1, 3, 3], [1, 2, 2], [0, 1, 1], [5, 3, 2, 15, 13], 33),
            ([1, 1, 1], [2, 2, 2], [0, 0, 0], [6, 2, 4, 9, 9], 20),
            ([3, 3, 3], [1, 1, 1], [1, 1, 1], [4, 8, 2, 40, 40], 70),
            ([1, 3, 3], [1, 3, 1], [0, 2, 0], [7, 1, 1, 5, 3], 9),
            // K = 864 > KC (panels start mid-channel) and O = 256 > MC (the blocked path).
            ([3, 3, 3], [1, 1, 1], [1, 1, 1], [32, 2, 3, 6, 5], 256),
            ([3, 3, 3], [1, 2, 2], [1, 1, 1], [32, 1, 3, 7, 9], 250),
            // One item in several row chunks: the rows-split paths that are not merged.
            ([3, 3, 3], [1, 1, 1], [1, 1, 1], [8, 1, 2, 40, 40], 70),
            // Two whole-item chunks of 1025 columns: merged, the tail panel moves.
            ([1, 3, 3], [1, 1, 1], [0, 1, 1], [16, 2, 1, 25, 41], 24),
            // Strided W over row chunks (not merged, so bit-compared) from a phase-split
            // input: an odd width (uneven phases) and a stride of 3.
            ([1, 3, 3], [1, 2, 2], [0, 1, 1], [4, 2, 3, 64, 63], 20),
            ([1, 3, 3], [1, 3, 3], [0, 1, 1], [3, 4, 2, 50, 47], 10),
            // The same from phase planes (8 channels or more), whose input gradient is added
            // into planes and rearranged: bit-identical to the scatter of copied runs.
            ([1, 3, 3], [1, 2, 2], [0, 1, 1], [8, 2, 3, 64, 63], 20),
            ([1, 3, 3], [1, 3, 3], [0, 1, 1], [9, 2, 2, 50, 47], 10),
            ([1, 1, 1], [2, 2, 2], [0, 0, 0], [16, 2, 5, 9, 11], 12),
            ([3, 3, 3], [2, 2, 2], [1, 1, 1], [8, 2, 5, 6, 7], 10),
        ];
        if !crate::layers::sgemm::has_fast_path() {
            eprintln!("no AVX-512: the implicit paths do not exist here, nothing to compare");
            return;
        }
        for (kernel, stride, pad, dims, o) in cases {
            let g = CmGeometry {
                kernel,
                stride,
                pad,
            };
            let s = Sizes::new(dims, o, g).expect("valid case");
            let n: usize = dims.iter().product();
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 7919) % 1013) as f32 / 500.0 - 1.0)
                .collect();
            let w: Vec<f32> = (0..s.weight_len())
                .map(|i| ((i * 104_729) % 997) as f32 / 400.0 - 1.2)
                .collect();
            let (a, kept) = forward_with(&x, &w, None, &s, true);
            let (b, none) = forward_with(&x, &w, None, &s, false);
            assert!(none.is_none(), "explicit patches keep no input copy");
            let same = |u: &[f32], v: &[f32]| {
                u.len() == v.len() && u.iter().zip(v).all(|(p, q)| p.to_bits() == q.to_bits())
            };
            // Within `tol` of the largest value of `v`.
            let close = |u: &[f32], v: &[f32], tol: f32| {
                let scale = v.iter().fold(0f32, |m, x| m.max(x.abs()));
                let err = u.iter().zip(v).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
                u.len() == v.len() && err <= tol * scale
            };
            if s.small_map(&s.tasks()) {
                // One GEMM over all columns instead of one per chunk: the narrow tail panels
                // (summed in another order) can fall on other columns.
                assert!(
                    close(&a, &b, 1e-5),
                    "{g:?} {dims:?}: merged forward differs"
                );
            } else {
                assert!(
                    same(&a, &b),
                    "{g:?} {dims:?}: implicit and explicit patches differ"
                );
            }
            // The weight gradient packs the same patches, transposed, into the same GEMM.
            let dy: Vec<f32> = (0..a.len())
                .map(|i| ((i * 3571) % 1009) as f32 / 450.0 - 1.1)
                .collect();
            let (dx_a, dw_a) = backward_scatter(&x, kept.as_ref(), &w, &dy, &s, true, true);
            let (dx_b, dw_b) = backward_scatter(&x, None, &w, &dy, &s, true, false);
            // The forward pass's kept input copy gives what a fresh one does.
            let (dx_c, dw_c) = backward_scatter(&x, None, &w, &dy, &s, true, true);
            assert!(
                same(&dx_a, &dx_c) && same(&dw_a, &dw_c),
                "{g:?} {dims:?}: the kept input copy changed the gradients"
            );
            if s.small_map(&s.tasks()) && s.tasks().len() > 1 {
                // One GEMM over all columns instead of one per chunk: another summation order.
                assert!(
                    close(&dw_a, &dw_b, 1e-5),
                    "{g:?} {dims:?}: merged dW differs"
                );
            } else {
                assert!(
                    same(&dw_a, &dw_b),
                    "{g:?} {dims:?}: implicit and explicit dW differ"
                );
            }
            assert!(
                same(&dx_a, &dx_b),
                "{g:?} {dims:?}: dx changed with the dW path"
            );
        }
    }

    #[test]
    fn matches_the_definition_and_its_gradients_are_adjoint() -> Result<()> {
        let dev = Device::Cpu;
        let cases = [
            ([3, 7, 7], [1, 2, 2], [1, 3, 3], (2, 3, 4, 11, 9)),
            ([1, 3, 3], [1, 2, 2], [0, 1, 1], (3, 2, 3, 7, 8)),
            ([3, 1, 1], [2, 1, 1], [1, 0, 0], (2, 3, 5, 4, 3)),
            ([1, 1, 1], [2, 2, 2], [0, 0, 0], (2, 4, 3, 5, 5)),
            ([1, 3, 3], [1, 1, 1], [0, 1, 1], (1, 2, 1, 40, 33)),
            // Enough chunks for the one-chunk-per-thread paths.
            ([3, 3, 3], [1, 1, 1], [1, 1, 1], (8, 3, 2, 40, 40)),
            // Stride 1 with uneven padding: the transposed convolution pads 2, 0 and 1.
            ([3, 3, 3], [1, 1, 1], [0, 2, 1], (2, 3, 4, 10, 12)),
        ];
        for (kernel, stride, pad, (b, c, t, h, wd)) in cases {
            let g = CmGeometry {
                kernel,
                stride,
                pad,
            };
            let o = 5;
            let x = Tensor::randn(0.0, 1.0, (b, c, t, h, wd), &dev)?.to_dtype(DType::F64)?;
            let w = Tensor::randn(0.0, 1.0, (o, c, kernel[0], kernel[1], kernel[2]), &dev)?
                .to_dtype(DType::F64)?;
            let want = naive(&x, &w, g)?;
            let (_, _, to, ho, wo) = want.dims5()?;
            let got = run(&x, &w, g, [to, ho, wo])?;
            let err = (got - &want)?.abs()?.max_all()?.to_scalar::<f64>()?;
            assert!(err < 1e-10, "{kernel:?} {stride:?}: forward error {err}");
            // Gradients: <conv(x + e dx, w), r> is linear in x, so d/dx of <conv, r> is exact
            // when compared with the definition's value on a basis; use a random direction.
            let xv = Var::from_tensor(&x)?;
            let wv = Var::from_tensor(&w)?;
            let r = Tensor::randn(0.0, 1.0, want.shape(), &dev)?.to_dtype(DType::F64)?;
            let loss = (run(xv.as_tensor(), wv.as_tensor(), g, [to, ho, wo])? * &r)?.sum_all()?;
            let grads = loss.backward()?;
            let gx = grads.get(xv.as_tensor()).expect("dx");
            let gw = grads.get(wv.as_tensor()).expect("dw");
            let dx = Tensor::randn(0.0, 1.0, x.shape(), &dev)?.to_dtype(DType::F64)?;
            let dw = Tensor::randn(0.0, 1.0, w.shape(), &dev)?.to_dtype(DType::F64)?;
            let lhs_x = (naive(&dx, &w, g)? * &r)?.sum_all()?.to_scalar::<f64>()?;
            let rhs_x = (gx * &dx)?.sum_all()?.to_scalar::<f64>()?;
            assert!(
                (lhs_x - rhs_x).abs() < 1e-9 * lhs_x.abs().max(1.0),
                "{kernel:?}: dx"
            );
            let lhs_w = (naive(&x, &dw, g)? * &r)?.sum_all()?.to_scalar::<f64>()?;
            let rhs_w = (gw * &dw)?.sum_all()?.to_scalar::<f64>()?;
            assert!(
                (lhs_w - rhs_w).abs() < 1e-9 * lhs_w.abs().max(1.0),
                "{kernel:?}: dw"
            );
        }
        Ok(())
    }

    /// Every plane position holds the input value its phase names (zero past the input's
    /// end), every tap's shift lands on the value the definition reads, and the input gradient
    /// comes back from the planes at every position some tap reads (zero elsewhere).
    #[test]
    fn phase_planes_hold_each_phase_in_the_output_layout() {
        // (kernel, stride, pad, input (C, B, T, H, W))
        let cases = [
            // Stride (1, 2, 2) with both phases kept (the AVX-512 split and merge): odd and
            // even sizes, rows over two 32-column vector pairs.
            ([1, 3, 3], [1, 2, 2], [0, 1, 1], [8, 2, 1, 7, 9]),
            ([1, 3, 3], [1, 2, 2], [0, 1, 1], [8, 1, 2, 5, 67]),
            ([1, 3, 3], [1, 2, 2], [0, 1, 1], [8, 1, 1, 6, 64]),
            ([3, 3, 3], [1, 2, 2], [1, 1, 1], [8, 1, 3, 6, 5]),
            ([3, 3, 3], [2, 2, 2], [1, 1, 1], [8, 2, 5, 6, 7]),
            ([1, 3, 3], [1, 3, 3], [0, 1, 1], [8, 1, 2, 8, 7]),
            ([1, 1, 1], [2, 2, 2], [0, 0, 0], [8, 2, 3, 5, 4]),
            ([1, 7, 7], [1, 2, 2], [0, 3, 3], [8, 1, 1, 9, 12]),
        ];
        for (kernel, stride, pad, dims) in cases {
            let g = CmGeometry {
                kernel,
                stride,
                pad,
            };
            let s = Sizes::new(dims, 3, g).expect("valid case");
            assert!(planes_apply(&s), "{g:?} {dims:?}: planes apply");
            let [c, b, t, h, w] = dims;
            let x: Vec<f32> = (0..c * b * t * h * w).map(|i| i as f32 + 1.0).collect();
            let planes = phase_planes(&x, &s);
            let used = used_phases(&s);
            let phases: usize = used.iter().map(Vec::len).product();
            let plane = b * s.to * s.ho * s.wo;
            assert_eq!(planes.len(), c * phases * plane);
            let at = |ch: usize, bi: usize, ti: usize, hi: usize, wi: usize| {
                x[(((ch * b + bi) * t + ti) * h + hi) * w + wi]
            };
            // Each tap's shifted read, at every output position where the tap is inside.
            for (tap, (phase, shift)) in plane_shifts(&s).into_iter().enumerate() {
                let (i, j, l) = (
                    tap / (kernel[1] * kernel[2]),
                    tap / kernel[2] % kernel[1],
                    tap % kernel[2],
                );
                for ch in 0..c {
                    for col in 0..plane {
                        let (wo, r) = (col % s.wo, col / s.wo);
                        let (ho, r) = (r % s.ho, r / s.ho);
                        let (to, bi) = (r % s.to, r / s.to);
                        let inside = |o: usize, st: usize, k: usize, p: usize, n: usize| {
                            (o * st + k).checked_sub(p).filter(|&v| v < n)
                        };
                        let (Some(ti), Some(hi), Some(wi)) = (
                            inside(to, stride[0], i, pad[0], t),
                            inside(ho, stride[1], j, pad[1], h),
                            inside(wo, stride[2], l, pad[2], w),
                        ) else {
                            continue;
                        };
                        let p = (ch * phases + phase) * plane;
                        let got = planes[(p as isize + col as isize + shift) as usize];
                        assert_eq!(got, at(ch, bi, ti, hi, wi), "{g:?} {dims:?} tap {tap}");
                    }
                }
            }
            // Back from the planes: the input where some tap reads, zero elsewhere.
            let back = from_phase_planes(&planes, &s);
            let read = |d: usize, v: usize| {
                (0..kernel[d]).any(|k| {
                    (v + pad[d]).checked_sub(k).is_some_and(|u| {
                        u % stride[d] == 0 && u / stride[d] < [s.to, s.ho, s.wo][d]
                    })
                })
            };
            for (idx, (&got, &want)) in back.iter().zip(&x).enumerate() {
                let (wi, r) = (idx % w, idx / w);
                let (hi, r) = (r % h, r / h);
                let ti = r % t;
                let want = if read(0, ti) && read(1, hi) && read(2, wi) {
                    want
                } else {
                    0.0
                };
                assert_eq!(
                    got, want,
                    "{g:?} {dims:?}: position {idx} back from the planes"
                );
            }
        }
    }

    /// The vector stride-2 row copies (phase planes and back) move the values the plain loops
    /// do, for every length around the vector widths.
    #[test]
    fn strided_row_copies_match_the_plain_loops() {
        use std::mem::MaybeUninit;
        // Every slot starts initialised (to -1), so reading them all back is sound.
        let values = |v: Vec<MaybeUninit<f32>>| -> Vec<f32> {
            // SAFETY: see above.
            v.into_iter().map(|x| unsafe { x.assume_init() }).collect()
        };
        for step in [1, 2, 3] {
            for n in 0..50usize {
                let src: Vec<f32> = (0..(n * step).max(1)).map(|i| i as f32 + 0.5).collect();
                let mut a = vec![MaybeUninit::new(-1.0f32); n];
                let mut b = vec![MaybeUninit::new(-1.0f32); n];
                f32::gather_strided(&src, step, &mut a);
                strided_row(&src, step, &mut b);
                assert_eq!(values(a), values(b), "gather, step {step}, {n} values");
                let vals: Vec<f32> = (0..n).map(|i| i as f32 * 3.0 + 1.0).collect();
                let len = if n == 0 { 0 } else { (n - 1) * step + 1 } + 3;
                let mut a = vec![MaybeUninit::new(-1.0f32); len];
                let mut b = vec![MaybeUninit::new(-1.0f32); len];
                f32::spread_strided(&vals, step, &mut a);
                scatter_row_strided(&vals, step, &mut b);
                assert_eq!(values(a), values(b), "spread, step {step}, {n} values");
            }
        }
    }

    #[test]
    fn phase_split_rows_hold_each_stride_phase_in_order() {
        let g = CmGeometry {
            kernel: [1, 3, 3],
            stride: [1, 3, 3],
            pad: [0, 1, 1],
        };
        // Rows of 7 columns, stride 3: phases {0, 3, 6}, {1, 4}, {2, 5}.
        let s = Sizes::new([2, 1, 1, 3, 7], 4, g).expect("sizes");
        let x: Vec<u32> = (0..42).collect();
        let y = phase_split(&x, &s).expect("strided");
        for (r, row) in y.chunks_exact(7).enumerate() {
            let b = 7 * r as u32;
            assert_eq!(row, [0, 3, 6, 1, 4, 2, 5].map(|c| b + c));
        }
        assert_eq!(
            (0..3).map(|q| phase_start(7, 3, q)).collect::<Vec<_>>(),
            [0, 3, 5]
        );
        // Strides as wide as the row or wider (phases past the row's end are empty).
        for (w, sw) in [(1, 3), (2, 5), (3, 3), (2, 2)] {
            let g = CmGeometry {
                kernel: [1, 1, 1],
                stride: [1, 1, sw],
                pad: [0, 0, 0],
            };
            let s = Sizes::new([1, 1, 1, 2, w], 1, g).expect("sizes");
            let x: Vec<u32> = (0..2 * w as u32).collect();
            let y = phase_split(&x, &s).expect("strided");
            for (r, row) in y.chunks_exact(w).enumerate() {
                let want: Vec<u32> = (0..sw)
                    .flat_map(|q| (q..w).step_by(sw))
                    .map(|c| (r * w + c) as u32)
                    .collect();
                assert_eq!(row, want, "w {w} stride {sw}");
            }
        }
        let unit = Sizes::new(
            [2, 1, 1, 3, 7],
            4,
            CmGeometry {
                stride: [1, 1, 1],
                ..g
            },
        );
        assert!(phase_split(&x, &unit.expect("sizes")).is_none());
    }

    /// The twin convolution's forward pass is the input gradient: the same values as W^T dY
    /// scattered back, in f64 and (to rounding) in f32 on the implicit path.
    #[test]
    fn transposed_input_gradient_equals_the_scattered_one() {
        // (kernel, pad, input (C, B, T, H, W), O): stride 1, every padding from 0 to k - 1;
        // C = 20 and O = 19 give the weight flip a second, partial block of channels.
        let cases = [
            ([1, 3, 3], [0, 1, 1], [3, 2, 2, 12, 14], 5),
            ([3, 1, 1], [1, 0, 0], [4, 2, 6, 9, 8], 3),
            ([3, 3, 3], [0, 2, 1], [2, 2, 4, 10, 12], 4),
            ([1, 1, 1], [0, 0, 0], [6, 2, 2, 11, 13], 7),
            ([1, 3, 3], [0, 1, 1], [20, 2, 1, 12, 13], 19),
            // Several column chunks: the twin's weight is packed once (`PackedA`) from w.
            ([1, 3, 3], [0, 1, 1], [20, 2, 2, 40, 40], 19),
        ];
        for (kernel, pad, dims, o) in cases {
            let g = CmGeometry {
                kernel,
                stride: [1, 1, 1],
                pad,
            };
            let s = Sizes::new(dims, o, g).expect("sizes");
            let t = s.transposed().expect("stride 1 has a twin");
            assert_eq!(t.out_dims(), dims);
            assert!(s.cols() >= 256, "{kernel:?}: too small for the twin path");
            let val = |i: usize, m: usize| ((i * m) % 1009) as f64 / 1009.0 - 0.5;
            let x: Vec<f64> = (0..dims.iter().product()).map(|i| val(i, 7919)).collect();
            let w: Vec<f64> = (0..s.weight_len()).map(|i| val(i, 104_729)).collect();
            let dy: Vec<f64> = (0..o * s.cols()).map(|i| val(i, 3571)).collect();
            let max_diff = |a: &[f64], b: &[f64]| {
                assert_eq!(a.len(), b.len());
                a.iter()
                    .zip(b)
                    .map(|(p, q)| (p - q).abs())
                    .fold(0.0, f64::max)
            };
            let (dx_ref, _) = backward_scatter(&x, None, &w, &dy, &s, true, false);
            // The twin itself, whatever `backward` is switched to.
            let (dx, _) = forward_with(&dy, &flip_transpose(&w, &s), None, &t, false);
            let err = max_diff(&dx, &dx_ref);
            assert!(err < 1e-12, "{kernel:?}: input gradient differs by {err}");
            if !scatter_dx() {
                let (dx_b, _) = backward(&x, &w, &dy, &s, true);
                assert_eq!(dx_b, dx, "{kernel:?}: backward does not take the twin");
            }
            // f32, with the twin's patches packed from dy where the CPU allows it.
            let to32 = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
            let (x32, w32, dy32) = (to32(&x), to32(&w), to32(&dy));
            let (dx32, _) = forward_with(&dy32, &flip_transpose(&w32, &s), None, &t, true);
            // The flipped weight packed straight from w: the same panels, so the same bits.
            let (dx32_packed, _) = forward_with(&dy32, &w32, Some(&s), &t, true);
            assert!(
                dx32.iter()
                    .zip(&dx32_packed)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{kernel:?}: the flipped weight packed from w differs"
            );
            let (dx32_ref, _) = backward_scatter(&x32, None, &w32, &dy32, &s, true, false);
            let dx32: Vec<f64> = dx32.iter().map(|&a| a as f64).collect();
            let dx32_ref: Vec<f64> = dx32_ref.iter().map(|&a| a as f64).collect();
            let err = max_diff(&dx32, &dx32_ref);
            assert!(
                err < 1e-4,
                "{kernel:?}: f32 input gradient differs by {err}"
            );
        }
    }

    /// The weight gradient sums per-task partials; the sum must not depend on which worker
    /// happened to pick up which task, or seeded training runs would differ.
    #[test]
    fn gradients_are_bit_reproducible() -> Result<()> {
        let dev = Device::Cpu;
        let g = CmGeometry {
            kernel: [1, 3, 3],
            stride: [1, 1, 1],
            pad: [0, 1, 1],
        };
        let x = Tensor::randn(0f32, 1.0, (16, 8, 2, 30, 30), &dev)?;
        let w = Tensor::randn(0f32, 1.0, (12, 8, 1, 3, 3), &dev)?;
        let r = Tensor::randn(0f32, 1.0, (16, 12, 2, 30, 30), &dev)?;
        let grads = || -> Result<(Vec<f32>, Vec<f32>)> {
            let (xv, wv) = (Var::from_tensor(&x)?, Var::from_tensor(&w)?);
            let y = run(xv.as_tensor(), wv.as_tensor(), g, [2, 30, 30])?;
            let gr = (y * &r)?.sum_all()?.backward()?;
            let flat = |t: &Var| -> Result<Vec<f32>> {
                gr.get(t.as_tensor())
                    .expect("gradient")
                    .flatten_all()?
                    .to_vec1()
            };
            Ok((flat(&xv)?, flat(&wv)?))
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let first = pool.install(grads)?;
        for _ in 0..4 {
            let again = pool.install(grads)?;
            assert!(first.0 == again.0, "input gradient changed between runs");
            assert!(first.1 == again.1, "weight gradient changed between runs");
        }
        Ok(())
    }

    #[test]
    fn f32_matches_f64() -> Result<()> {
        let dev = Device::Cpu;
        let g = CmGeometry {
            kernel: [1, 3, 3],
            stride: [1, 1, 1],
            pad: [0, 1, 1],
        };
        let x = Tensor::randn(0f32, 1.0, (2, 16, 2, 20, 20), &dev)?;
        let w = Tensor::randn(0f32, 1.0, (24, 16, 1, 3, 3), &dev)?;
        let got = run(&x, &w, g, [2, 20, 20])?.to_dtype(DType::F64)?;
        let want = naive(&x.to_dtype(DType::F64)?, &w.to_dtype(DType::F64)?, g)?;
        let err = (got - &want)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(err < 1e-4, "f32 error {err}");
        Ok(())
    }
}
