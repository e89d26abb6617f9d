//! The backend logic, written once over a [`Device`]: how every operation of nf-core's
//! [`Backend`] trait becomes kernel launches and GEMMs on one device memory.
//!
//! The device memory is the plan's arena (offsets `0..arena`, carved by the layout's regions
//! exactly as on the CPU) followed by a small device workspace this backend needs beyond the
//! plan ([`REDUCE_FLOATS`] elements for per-channel reductions and the loss, see
//! [`crate::reserved_bytes`]). [`Engine`] over [`crate::cuda::CudaDevice`] is the CUDA backend;
//! over [`crate::emu::EmuDevice`] the same logic runs the same kernel sources on the CPU, which
//! is how it is tested on machines without a GPU.
//!
//! Convolutions run as im2col + GEMM in chunks of samples: as many samples as the layout's
//! `cols` workspace holds (one per planned worker). The forward pass and the input gradient
//! are one strided-batched GEMM per chunk; the weight gradient of a chunk is a batched GEMM
//! into per-sample partial sums (which need `samples·(cols + weights)` of workspace) followed
//! by a summing kernel, or, when the workspace holds fewer than two samples with their
//! partials, one GEMM per sample accumulating into the gradient (`beta = 1`).
//!
//! Errors: operations do not fail individually; the first error is recorded, later operations
//! are skipped, and [`Backend::sync`] returns it.
use nf_core::backend::Backend;
use nf_core::ops::batchnorm::{EPS, MOMENTUM};
use nf_core::ops::conv2d::ConvGeom;
use nf_core::ops::Nchw;
use nf_core::optim::Sgd;
use nf_core::region::Region;

use crate::gemm::{gemm_call, CublasGemm, RowGemm};
use crate::kernels::{check_args, Arg, Kernel};

/// Elements of the device workspace for reductions and the loss (1 MiB), after the arena.
pub const REDUCE_FLOATS: usize = 1 << 18;

/// Default upper bound on the partial sums per channel of a reduction.
pub const MAX_PARTS: usize = 1024;

/// An error of the device or of the backend's use of it (one line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceError(pub String);

impl std::fmt::Display for DeviceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DeviceError {}

impl From<String> for DeviceError {
    fn from(s: String) -> Self {
        DeviceError(s)
    }
}

type Res = Result<(), DeviceError>;

/// What the engine needs from a device: one memory of `f32` elements addressed by offset,
/// kernel launches, GEMMs and synchronisation. Work may be queued; `download` and `sync`
/// wait for it.
pub trait Device {
    /// Elements of the device memory (arena and workspace).
    fn mem_len(&self) -> usize;
    /// Copy `src` to the memory at `offset`.
    fn upload(&mut self, offset: usize, src: &[f32]) -> Res;
    /// Copy the memory at `offset` to `dst`, after all queued work.
    fn download(&mut self, offset: usize, dst: &mut [f32]) -> Res;
    /// Launch `k` over `threads` logical threads (grid-stride kernels: any grid is correct)
    /// with `args`, already checked against the kernel's parameters.
    fn launch(&mut self, k: Kernel, threads: usize, args: &[Arg]) -> Res;
    /// Run one `cublasSgemmStridedBatched` call.
    fn gemm(&mut self, g: &CublasGemm) -> Res;
    /// Wait for all queued work; report a device error.
    fn sync(&mut self) -> Res;
}

/// nf-core's backend over a [`Device`].
pub struct Engine<D: Device> {
    dev: D,
    arena: usize,
    red: Region,
    max_parts: usize,
    err: Option<DeviceError>,
    host: Vec<f32>,
}

fn i32_of(v: usize, what: &str) -> Result<i32, DeviceError> {
    i32::try_from(v).map_err(|_| DeviceError(format!("{what} = {v} is too large for a kernel")))
}

fn i64_of(v: usize) -> Arg {
    Arg::I64(v as i64)
}

/// Check that `r` holds at least `len` elements.
fn need(r: Region, len: usize, what: &str) -> Res {
    if r.len < len {
        return Err(DeviceError(format!(
            "{what}: region of {} elements, {len} needed",
            r.len
        )));
    }
    Ok(())
}

impl<D: Device> Engine<D> {
    /// The backend over `dev`, whose memory is the arena (`arena` elements) followed by the
    /// reduction workspace.
    ///
    /// # Errors
    /// The device memory is smaller than `arena + REDUCE_FLOATS`.
    pub fn from_device(dev: D, arena: usize) -> Result<Self, DeviceError> {
        if dev.mem_len() < arena + REDUCE_FLOATS {
            return Err(DeviceError(format!(
                "device memory of {} elements is smaller than the arena ({arena}) and the \
                 reduction workspace ({REDUCE_FLOATS})",
                dev.mem_len()
            )));
        }
        Ok(Engine {
            dev,
            arena,
            red: Region::new(arena, REDUCE_FLOATS),
            max_parts: MAX_PARTS,
            err: None,
            host: vec![0.0; REDUCE_FLOATS],
        })
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.dev
    }

    /// The device, mutably.
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.dev
    }

    /// Use at most `parts` partial sums per channel in reductions (tests use small values to
    /// make every partial walk over several planes).
    pub fn set_max_parts(&mut self, parts: usize) {
        self.max_parts = parts.max(1);
    }

    /// Run `f` unless an error is already recorded; record its error.
    fn run(&mut self, f: impl FnOnce(&mut Self) -> Res) {
        if self.err.is_some() {
            return;
        }
        if let Err(e) = f(self) {
            self.err = Some(e);
        }
    }

    fn launch(&mut self, k: Kernel, threads: usize, args: &[Arg]) -> Res {
        if threads == 0 {
            return Ok(());
        }
        check_args(k, args, self.dev.mem_len())?;
        self.dev.launch(k, threads, args)
    }

    fn fill_at(&mut self, r: Region, v: f32) -> Res {
        self.launch(
            Kernel::Fill,
            r.len,
            &[Arg::Buf(r), i64_of(r.len), Arg::F32(v)],
        )
    }

    /// Issue `g` (degenerate shapes handled here: nothing for an empty C, zeros for `k = 0`).
    fn gemm(&mut self, g: RowGemm) -> Res {
        if g.m == 0 || g.n == 0 || g.batch == 0 {
            return Ok(());
        }
        if g.k == 0 {
            // C = beta·C: the backend only uses beta 0 (overwrite) and 1 (accumulate).
            if g.beta == 0.0 {
                for p in 0..g.batch {
                    self.fill_at(Region::new(g.c + p * g.stride_c, g.m * g.n), 0.0)?;
                }
            }
            return Ok(());
        }
        let call = gemm_call(&g)?;
        self.dev.gemm(&call)
    }

    /// Partial sums per channel that fit `arrays` arrays of them in the reduction workspace
    /// after `reserved` elements, for `c` channels of `m` elements.
    fn parts(
        &self,
        c: usize,
        m: usize,
        arrays: usize,
        reserved: usize,
    ) -> Result<usize, DeviceError> {
        let cap = (self.red.len - reserved) / (arrays * c.max(1));
        if cap == 0 {
            return Err(DeviceError(format!(
                "{c} channels do not fit the reduction workspace ({REDUCE_FLOATS} elements)"
            )));
        }
        Ok(cap.min(self.max_parts).min(m).max(1))
    }

    /// `out[ch] = Σ x[ch]` over an NCHW tensor at `x` (`n·c·hw` elements).
    fn channel_sum(&mut self, x: Region, n: usize, c: usize, hw: usize, out: Region) -> Res {
        let m = n * hw;
        if m == 0 {
            return self.fill_at(out.prefix(c), 0.0);
        }
        let parts = self.parts(c, m, 1, 0)?;
        let part = self.red.prefix(c * parts);
        let (ni, ci, hwi, pi) = (
            i32_of(n, "batch")?,
            i32_of(c, "channels")?,
            i32_of(hw, "plane")?,
            i32_of(parts, "parts")?,
        );
        self.launch(
            Kernel::ChanPartial,
            c * parts,
            &[
                Arg::Buf(x.prefix(n * c * hw)),
                Arg::Buf(Region::NONE),
                Arg::Buf(part),
                Arg::I32(ni),
                Arg::I32(ci),
                Arg::I32(hwi),
                Arg::I32(pi),
            ],
        )?;
        self.launch(
            Kernel::ChanFinish,
            c,
            &[
                Arg::Buf(part),
                Arg::Buf(out.prefix(c)),
                Arg::I32(ci),
                Arg::I32(pi),
                Arg::I64(1),
            ],
        )
    }

    /// Geometry arguments of im2col / col2im for a chunk of `ns` samples.
    fn geom_args(g: &ConvGeom, ns: usize) -> Result<[Arg; 9], DeviceError> {
        Ok([
            Arg::I32(i32_of(ns, "samples")?),
            Arg::I32(i32_of(g.c_in, "input channels")?),
            Arg::I32(i32_of(g.h, "height")?),
            Arg::I32(i32_of(g.w, "width")?),
            Arg::I32(i32_of(g.k, "kernel")?),
            Arg::I32(i32_of(g.stride, "stride")?),
            Arg::I32(i32_of(g.pad, "padding")?),
            Arg::I32(i32_of(g.h_out(), "output height")?),
            Arg::I32(i32_of(g.w_out(), "output width")?),
        ])
    }

    fn im2col(&mut self, g: &ConvGeom, x: Region, cols: Region, ns: usize) -> Res {
        let [a, b, c, d, e, f, h, i, j] = Self::geom_args(g, ns)?;
        let args = [Arg::Buf(x), Arg::Buf(cols), a, b, c, d, e, f, h, i, j];
        self.launch(Kernel::Im2col, ns * g.cols_len(), &args)
    }

    fn col2im(&mut self, g: &ConvGeom, cols: Region, dx: Region, ns: usize) -> Res {
        let [a, b, c, d, e, f, h, i, j] = Self::geom_args(g, ns)?;
        let args = [Arg::Buf(cols), Arg::Buf(dx), a, b, c, d, e, f, h, i, j];
        self.launch(Kernel::Col2im, ns * g.c_in * g.h * g.w, &args)
    }

    fn conv_forward_impl(
        &mut self,
        g: &ConvGeom,
        x: Region,
        w: Region,
        bias: Region,
        y: Region,
        cols: Region,
    ) -> Res {
        let (hwo, ckk) = (g.h_out() * g.w_out(), g.c_in * g.k * g.k);
        let (in_s, out_s) = (g.c_in * g.h * g.w, g.c_out * hwo);
        if g.n == 0 || out_s == 0 {
            return Ok(());
        }
        need(x, g.in_len(), "conv input")?;
        need(w, g.weight_len(), "conv weight")?;
        need(y, g.out_len(), "conv output")?;
        let mut gm = RowGemm {
            ta: false,
            tb: false,
            m: g.c_out,
            n: hwo,
            k: ckk,
            alpha: 1.0,
            a: w.offset,
            stride_a: 0,
            b: x.offset,
            stride_b: in_s,
            beta: 0.0,
            c: y.offset,
            stride_c: out_s,
            batch: g.n,
        };
        if is_pointwise(g) || ckk == 0 {
            self.gemm(gm)?;
        } else {
            let cl = g.cols_len();
            let chunk = g.n.min(cols.len / cl);
            if chunk == 0 {
                return Err(DeviceError(format!(
                    "conv workspace of {} elements cannot hold one sample's columns ({cl})",
                    cols.len
                )));
            }
            let mut s0 = 0;
            while s0 < g.n {
                let cs = chunk.min(g.n - s0);
                let cr = cols.prefix(cs * cl);
                self.im2col(g, x.sub(s0 * in_s, cs * in_s), cr, cs)?;
                gm.b = cr.offset;
                gm.stride_b = cl;
                gm.c = y.offset + s0 * out_s;
                gm.batch = cs;
                self.gemm(gm)?;
                s0 += cs;
            }
        }
        if !bias.is_empty() {
            need(bias, g.c_out, "conv bias")?;
            self.launch(
                Kernel::BiasAdd,
                g.n * out_s,
                &[
                    Arg::Buf(y.prefix(g.out_len())),
                    Arg::Buf(bias.prefix(g.c_out)),
                    i64_of(g.n * out_s),
                    Arg::I32(i32_of(g.c_out, "channels")?),
                    Arg::I32(i32_of(hwo, "plane")?),
                ],
            )?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn conv_backward_impl(
        &mut self,
        g: &ConvGeom,
        x: Region,
        w: Region,
        dy: Region,
        dw: Region,
        db: Region,
        dx: Region,
        cols: Region,
    ) -> Res {
        let (hwo, ckk) = (g.h_out() * g.w_out(), g.c_in * g.k * g.k);
        let (in_s, out_s) = (g.c_in * g.h * g.w, g.c_out * hwo);
        let wl = g.weight_len();
        need(dw, wl, "conv weight gradient")?;
        if !db.is_empty() {
            need(db, g.c_out, "conv bias gradient")?;
            self.channel_sum(dy, g.n, g.c_out, hwo, db)?;
        }
        if g.n == 0 || hwo == 0 || ckk == 0 {
            // No product contributes: the reference leaves dW = 0 and dx = 0.
            self.fill_at(dw.prefix(wl), 0.0)?;
            if !dx.is_empty() && g.n * in_s > 0 {
                self.fill_at(dx.prefix(g.n * in_s), 0.0)?;
            }
            return Ok(());
        }
        need(x, g.in_len(), "conv input")?;
        need(w, wl, "conv weight")?;
        need(dy, g.out_len(), "conv output gradient")?;
        let pointwise = is_pointwise(g);
        let cl = if pointwise { 0 } else { g.cols_len() };

        // Weight gradient: dW = Σ_s dy_s · cols_sᵀ.
        let chunk = g.n.min(cols.len / (cl + wl));
        if chunk >= 2 {
            let mut s0 = 0;
            while s0 < g.n {
                let cs = chunk.min(g.n - s0);
                let (b, stride_b) = if pointwise {
                    (x.offset + s0 * in_s, in_s)
                } else {
                    let cr = cols.prefix(cs * cl);
                    self.im2col(g, x.sub(s0 * in_s, cs * in_s), cr, cs)?;
                    (cr.offset, cl)
                };
                let partials = cols.sub(cs * cl, cs * wl);
                self.gemm(RowGemm {
                    ta: false,
                    tb: true,
                    m: g.c_out,
                    n: ckk,
                    k: hwo,
                    alpha: 1.0,
                    a: dy.offset + s0 * out_s,
                    stride_a: out_s,
                    b,
                    stride_b,
                    beta: 0.0,
                    c: partials.offset,
                    stride_c: wl,
                    batch: cs,
                })?;
                self.launch(
                    Kernel::SumSlices,
                    wl,
                    &[
                        Arg::Buf(partials),
                        Arg::Buf(dw.prefix(wl)),
                        i64_of(wl),
                        Arg::I32(i32_of(cs, "samples")?),
                        Arg::I32(i32::from(s0 > 0)),
                    ],
                )?;
                s0 += cs;
            }
        } else {
            if cols.len < cl {
                return Err(DeviceError(format!(
                    "conv workspace of {} elements cannot hold one sample's columns ({cl})",
                    cols.len
                )));
            }
            for s in 0..g.n {
                let b = if pointwise {
                    x.offset + s * in_s
                } else {
                    let cr = cols.prefix(cl);
                    self.im2col(g, x.sub(s * in_s, in_s), cr, 1)?;
                    cr.offset
                };
                let beta = if s == 0 { 0.0 } else { 1.0 };
                self.gemm(RowGemm::single(
                    false,
                    true,
                    g.c_out,
                    ckk,
                    hwo,
                    dy.offset + s * out_s,
                    b,
                    dw.offset,
                    beta,
                ))?;
            }
        }

        // Input gradient: dx_s = col2im(Wᵀ · dy_s).
        if dx.is_empty() {
            return Ok(());
        }
        need(dx, g.in_len(), "conv input gradient")?;
        let mut gm = RowGemm {
            ta: true,
            tb: false,
            m: ckk,
            n: hwo,
            k: g.c_out,
            alpha: 1.0,
            a: w.offset,
            stride_a: 0,
            b: dy.offset,
            stride_b: out_s,
            beta: 0.0,
            c: dx.offset,
            stride_c: in_s,
            batch: g.n,
        };
        if pointwise {
            return self.gemm(gm);
        }
        let chunk = g.n.min(cols.len / cl);
        let mut s0 = 0;
        while s0 < g.n {
            let cs = chunk.min(g.n - s0);
            let cr = cols.prefix(cs * cl);
            gm.b = dy.offset + s0 * out_s;
            gm.c = cr.offset;
            gm.stride_c = cl;
            gm.batch = cs;
            self.gemm(gm)?;
            self.col2im(g, cr, dx.sub(s0 * in_s, cs * in_s), cs)?;
            s0 += cs;
        }
        Ok(())
    }

    fn nchw_args(d: &Nchw) -> Result<[Arg; 3], DeviceError> {
        Ok([
            Arg::I32(i32_of(d.n, "batch")?),
            Arg::I32(i32_of(d.c, "channels")?),
            Arg::I32(i32_of(d.h * d.w, "plane")?),
        ])
    }

    fn bn_forward_train_impl(
        &mut self,
        d: &Nchw,
        x: Region,
        gb: Region,
        y: Region,
        invstd: Region,
        running: Region,
    ) -> Res {
        let (c, hw) = (d.c, d.h * d.w);
        let m = d.n * hw;
        if m == 0 || c == 0 {
            return Ok(());
        }
        need(x, d.len(), "batch-norm input")?;
        need(y, d.len(), "batch-norm output")?;
        need(gb, 2 * c, "batch-norm gamma and beta")?;
        need(invstd, c, "batch-norm invstd")?;
        need(running, 2 * c, "batch-norm running statistics")?;
        let (x, y) = (x.prefix(d.len()), y.prefix(d.len()));
        let mean = self.red.prefix(c);
        let parts = self.parts(c, m, 1, c)?;
        let part = self.red.sub(c, c * parts);
        let [ni, ci, hwi] = Self::nchw_args(d)?;
        let pi = Arg::I32(i32_of(parts, "parts")?);
        self.launch(
            Kernel::ChanPartial,
            c * parts,
            &[
                Arg::Buf(x),
                Arg::Buf(Region::NONE),
                Arg::Buf(part),
                ni,
                ci,
                hwi,
                pi,
            ],
        )?;
        self.launch(
            Kernel::ChanFinish,
            c,
            &[Arg::Buf(part), Arg::Buf(mean), ci, pi, i64_of(m)],
        )?;
        self.launch(
            Kernel::ChanPartial,
            c * parts,
            &[Arg::Buf(x), Arg::Buf(mean), Arg::Buf(part), ni, ci, hwi, pi],
        )?;
        self.launch(
            Kernel::BnStats,
            c,
            &[
                Arg::Buf(part),
                Arg::Buf(mean),
                Arg::Buf(invstd.prefix(c)),
                Arg::Buf(running.prefix(2 * c)),
                ci,
                pi,
                ni,
                hwi,
                Arg::F32(EPS),
                Arg::F32(MOMENTUM),
            ],
        )?;
        self.launch(
            Kernel::BnNormalize,
            d.len(),
            &[
                Arg::Buf(x),
                Arg::Buf(y),
                Arg::Buf(mean),
                Arg::Buf(invstd.prefix(c)),
                Arg::Buf(gb.prefix(2 * c)),
                ni,
                ci,
                hwi,
            ],
        )
    }

    fn bn_backward_impl(
        &mut self,
        d: &Nchw,
        xhat: Region,
        gb: Region,
        invstd: Region,
        dy: Region,
        dgb: Region,
    ) -> Res {
        let (c, hw) = (d.c, d.h * d.w);
        let m = d.n * hw;
        if c == 0 {
            return Ok(());
        }
        need(dgb, 2 * c, "batch-norm gradient of gamma and beta")?;
        let dgb = dgb.prefix(2 * c);
        if m == 0 {
            return self.fill_at(dgb, 0.0);
        }
        need(xhat, d.len(), "batch-norm x-hat")?;
        need(dy, d.len(), "batch-norm output gradient")?;
        need(gb, c, "batch-norm gamma")?;
        need(invstd, c, "batch-norm invstd")?;
        let (xhat, dy) = (xhat.prefix(d.len()), dy.prefix(d.len()));
        let parts = self.parts(c, m, 2, 0)?;
        let pa = self.red.prefix(c * parts);
        let pb = self.red.sub(c * parts, c * parts);
        let [ni, ci, hwi] = Self::nchw_args(d)?;
        let pi = Arg::I32(i32_of(parts, "parts")?);
        self.launch(
            Kernel::ChanPartial2,
            c * parts,
            &[
                Arg::Buf(dy),
                Arg::Buf(xhat),
                Arg::Buf(pa),
                Arg::Buf(pb),
                ni,
                ci,
                hwi,
                pi,
            ],
        )?;
        // dgamma = Σ dy·x̂, dbeta = Σ dy.
        self.launch(
            Kernel::ChanFinish,
            c,
            &[Arg::Buf(pb), Arg::Buf(dgb.prefix(c)), ci, pi, Arg::I64(1)],
        )?;
        self.launch(
            Kernel::ChanFinish,
            c,
            &[Arg::Buf(pa), Arg::Buf(dgb.sub(c, c)), ci, pi, Arg::I64(1)],
        )?;
        // Only gamma is read here: the region may hold gamma alone (the reference's slice).
        self.launch(
            Kernel::BnBackwardDx,
            d.len(),
            &[
                Arg::Buf(dy),
                Arg::Buf(xhat),
                Arg::Buf(gb.prefix(c)),
                Arg::Buf(invstd.prefix(c)),
                Arg::Buf(dgb),
                ni,
                ci,
                hwi,
            ],
        )
    }

    fn softmax_xent_impl(
        &mut self,
        n: usize,
        classes: usize,
        logits: Region,
        labels: Region,
        dlogits: Region,
    ) -> Result<(f32, u32), DeviceError> {
        if classes == 0 || n == 0 {
            return Ok((0.0, 0));
        }
        need(logits, n * classes, "logits")?;
        need(labels, n, "labels")?;
        if !dlogits.is_empty() {
            need(dlogits, n * classes, "logit gradient")?;
        }
        let ci = i32_of(classes, "classes")?;
        let inv_n = 1.0 / n as f32;
        let chunk = self.red.len / 2;
        let (mut loss, mut correct) = (0f64, 0u32);
        let mut r0 = 0;
        while r0 < n {
            let rows = chunk.min(n - r0);
            let out = self.red.prefix(2 * rows);
            let dl = if dlogits.is_empty() {
                Region::NONE
            } else {
                dlogits.sub(r0 * classes, rows * classes)
            };
            self.launch(
                Kernel::SoftmaxXent,
                rows,
                &[
                    Arg::Buf(logits.sub(r0 * classes, rows * classes)),
                    Arg::Buf(labels.sub(r0, rows)),
                    Arg::Buf(dl),
                    Arg::Buf(out),
                    Arg::I32(i32_of(rows, "rows")?),
                    Arg::I32(ci),
                    Arg::F32(inv_n),
                ],
            )?;
            let host = &mut self.host[..2 * rows];
            self.dev.download(out.offset, host)?;
            loss += host[..rows].iter().map(|&v| f64::from(v)).sum::<f64>();
            correct += host[rows..].iter().filter(|&&v| v != 0.0).count() as u32;
            r0 += rows;
        }
        Ok((loss as f32, correct))
    }
}

fn is_pointwise(g: &ConvGeom) -> bool {
    g.k == 1 && g.stride == 1 && g.pad == 0
}

impl<D: Device> Backend for Engine<D> {
    type Error = DeviceError;

    fn arena_len(&self) -> usize {
        self.arena
    }

    fn write(&mut self, dst: Region, src: &[f32]) {
        self.run(|e| {
            if dst.len != src.len() || dst.end() > e.arena {
                return Err(DeviceError(format!(
                    "write of {} elements to {dst:?} (arena {})",
                    src.len(),
                    e.arena
                )));
            }
            e.dev.upload(dst.offset, src)
        });
    }

    fn read(&mut self, src: Region, dst: &mut [f32]) {
        if self.err.is_none() {
            let r = if src.len != dst.len() || src.end() > self.arena {
                Err(DeviceError(format!(
                    "read of {} elements from {src:?} (arena {})",
                    dst.len(),
                    self.arena
                )))
            } else {
                self.dev.download(src.offset, dst)
            };
            if let Err(e) = r {
                self.err = Some(e);
            }
        }
        if self.err.is_some() {
            dst.fill(f32::NAN);
        }
    }

    fn fill(&mut self, dst: Region, value: f32) {
        self.run(|e| e.fill_at(dst, value));
    }

    fn copy(&mut self, src: Region, dst: Region) {
        self.run(|e| {
            if src.len != dst.len || src.overlaps(&dst) {
                return Err(DeviceError(format!("copy {src:?} -> {dst:?}")));
            }
            e.launch(
                Kernel::Copy,
                src.len,
                &[Arg::Buf(src), Arg::Buf(dst), i64_of(src.len)],
            )
        });
    }

    fn sync(&mut self) -> Result<(), Self::Error> {
        let r = self.dev.sync();
        match self.err.take() {
            Some(e) => Err(e),
            None => r,
        }
    }

    fn conv_forward(
        &mut self,
        g: &ConvGeom,
        x: Region,
        w: Region,
        bias: Region,
        y: Region,
        cols: Region,
    ) {
        self.run(|e| e.conv_forward_impl(g, x, w, bias, y, cols));
    }

    fn conv_backward(
        &mut self,
        g: &ConvGeom,
        x: Region,
        w: Region,
        dy: Region,
        dw: Region,
        db: Region,
        dx: Region,
        cols: Region,
    ) {
        self.run(|e| e.conv_backward_impl(g, x, w, dy, dw, db, dx, cols));
    }

    fn bn_forward_train(
        &mut self,
        d: &Nchw,
        x: Region,
        gamma_beta: Region,
        y: Region,
        invstd: Region,
        running: Region,
    ) {
        self.run(|e| e.bn_forward_train_impl(d, x, gamma_beta, y, invstd, running));
    }

    fn bn_forward_eval(
        &mut self,
        d: &Nchw,
        x: Region,
        gamma_beta: Region,
        running: Region,
        y: Region,
    ) {
        self.run(|e| {
            if d.is_empty() {
                return Ok(());
            }
            let c = d.c;
            need(x, d.len(), "batch-norm input")?;
            need(y, d.len(), "batch-norm output")?;
            need(gamma_beta, 2 * c, "batch-norm gamma and beta")?;
            need(running, 2 * c, "batch-norm running statistics")?;
            let [ni, ci, hwi] = Self::nchw_args(d)?;
            e.launch(
                Kernel::BnEval,
                d.len(),
                &[
                    Arg::Buf(x.prefix(d.len())),
                    Arg::Buf(y.prefix(d.len())),
                    Arg::Buf(gamma_beta.prefix(2 * c)),
                    Arg::Buf(running.prefix(2 * c)),
                    ni,
                    ci,
                    hwi,
                    Arg::F32(EPS),
                ],
            )
        });
    }

    fn bn_backward(
        &mut self,
        d: &Nchw,
        xhat: Region,
        gamma_beta: Region,
        invstd: Region,
        dy: Region,
        dgamma_beta: Region,
    ) {
        self.run(|e| e.bn_backward_impl(d, xhat, gamma_beta, invstd, dy, dgamma_beta));
    }

    fn relu_forward(&mut self, x: Region) {
        self.run(|e| e.launch(Kernel::ReluForward, x.len, &[Arg::Buf(x), i64_of(x.len)]));
    }

    fn relu_backward(&mut self, y: Region, dy: Region) {
        self.run(|e| {
            let n = y.len.min(dy.len);
            e.launch(
                Kernel::ReluBackward,
                n,
                &[Arg::Buf(y.prefix(n)), Arg::Buf(dy.prefix(n)), i64_of(n)],
            )
        });
    }

    fn add_assign(&mut self, y: Region, x: Region) {
        self.run(|e| {
            let n = y.len.min(x.len);
            e.launch(
                Kernel::AddAssign,
                n,
                &[Arg::Buf(y.prefix(n)), Arg::Buf(x.prefix(n)), i64_of(n)],
            )
        });
    }

    fn maxpool_forward(&mut self, d: &Nchw, x: Region, y: Region) {
        self.run(|e| {
            let (planes, ho, wo) = (d.n * d.c, d.h / 2, d.w / 2);
            if planes * ho * wo == 0 {
                return Ok(());
            }
            need(x, d.len(), "max-pool input")?;
            need(y, planes * ho * wo, "max-pool output")?;
            e.launch(
                Kernel::MaxPool2Forward,
                planes * ho * wo,
                &[
                    Arg::Buf(x.prefix(d.len())),
                    Arg::Buf(y.prefix(planes * ho * wo)),
                    Arg::I32(i32_of(planes, "planes")?),
                    Arg::I32(i32_of(d.h, "height")?),
                    Arg::I32(i32_of(d.w, "width")?),
                ],
            )
        });
    }

    fn maxpool_backward(&mut self, d: &Nchw, x: Region, dy: Region, dx: Region) {
        self.run(|e| {
            let (planes, ho, wo) = (d.n * d.c, d.h / 2, d.w / 2);
            if d.is_empty() {
                return Ok(());
            }
            need(x, d.len(), "max-pool input")?;
            need(dx, d.len(), "max-pool input gradient")?;
            need(dy, planes * ho * wo, "max-pool output gradient")?;
            e.launch(
                Kernel::MaxPool2Backward,
                d.len(),
                &[
                    Arg::Buf(x.prefix(d.len())),
                    Arg::Buf(dy.prefix(planes * ho * wo)),
                    Arg::Buf(dx.prefix(d.len())),
                    Arg::I32(i32_of(planes, "planes")?),
                    Arg::I32(i32_of(d.h, "height")?),
                    Arg::I32(i32_of(d.w, "width")?),
                ],
            )
        });
    }

    fn avgpool_forward(&mut self, d: &Nchw, s: usize, x: Region, y: Region) {
        self.run(|e| {
            let planes = d.n * d.c;
            if d.h * d.w == 0 || s == 0 || planes == 0 {
                return Ok(());
            }
            need(x, d.len(), "average-pool input")?;
            need(y, planes * s * s, "average-pool output")?;
            e.launch(
                Kernel::AvgPoolForward,
                planes * s * s,
                &[
                    Arg::Buf(x.prefix(d.len())),
                    Arg::Buf(y.prefix(planes * s * s)),
                    Arg::I32(i32_of(planes, "planes")?),
                    Arg::I32(i32_of(d.h, "height")?),
                    Arg::I32(i32_of(d.w, "width")?),
                    Arg::I32(i32_of(s, "pool size")?),
                ],
            )
        });
    }

    fn avgpool_backward(&mut self, d: &Nchw, s: usize, dy: Region, dx: Region) {
        self.run(|e| {
            let planes = d.n * d.c;
            if d.is_empty() {
                return Ok(());
            }
            need(dx, d.len(), "average-pool input gradient")?;
            if s == 0 {
                return e.fill_at(dx.prefix(d.len()), 0.0);
            }
            need(dy, planes * s * s, "average-pool output gradient")?;
            e.launch(
                Kernel::AvgPoolBackward,
                d.len(),
                &[
                    Arg::Buf(dy.prefix(planes * s * s)),
                    Arg::Buf(dx.prefix(d.len())),
                    Arg::I32(i32_of(planes, "planes")?),
                    Arg::I32(i32_of(d.h, "height")?),
                    Arg::I32(i32_of(d.w, "width")?),
                    Arg::I32(i32_of(s, "pool size")?),
                ],
            )
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn linear_forward(
        &mut self,
        n: usize,
        fin: usize,
        fout: usize,
        x: Region,
        wb: Region,
        y: Region,
        _ws: Region,
    ) {
        self.run(|e| {
            if n == 0 || fout == 0 {
                return Ok(());
            }
            need(x, n * fin, "linear input")?;
            need(wb, fout * fin + fout, "linear weight and bias")?;
            need(y, n * fout, "linear output")?;
            e.gemm(RowGemm::single(
                false, true, n, fout, fin, x.offset, wb.offset, y.offset, 0.0,
            ))?;
            e.launch(
                Kernel::BiasAdd,
                n * fout,
                &[
                    Arg::Buf(y.prefix(n * fout)),
                    Arg::Buf(wb.sub(fin * fout, fout)),
                    i64_of(n * fout),
                    Arg::I32(i32_of(fout, "outputs")?),
                    Arg::I32(1),
                ],
            )
        });
    }

    fn linear_backward(
        &mut self,
        n: usize,
        fin: usize,
        fout: usize,
        x: Region,
        wb: Region,
        dy: Region,
        dwb: Region,
        dx: Region,
        _ws: Region,
    ) {
        self.run(|e| {
            need(dwb, fout * fin + fout, "linear weight and bias gradient")?;
            if fout == 0 {
                return Ok(());
            }
            need(x, n * fin, "linear input")?;
            need(dy, n * fout, "linear output gradient")?;
            e.gemm(RowGemm::single(
                true, false, fout, fin, n, dy.offset, x.offset, dwb.offset, 0.0,
            ))?;
            e.channel_sum(dy, n, fout, 1, dwb.sub(fin * fout, fout))?;
            if !dx.is_empty() {
                need(wb, fout * fin, "linear weight")?;
                need(dx, n * fin, "linear input gradient")?;
                e.gemm(RowGemm::single(
                    false, false, n, fin, fout, dy.offset, wb.offset, dx.offset, 0.0,
                ))?;
            }
            Ok(())
        });
    }

    fn softmax_xent(
        &mut self,
        n: usize,
        classes: usize,
        logits: Region,
        labels: Region,
        dlogits: Region,
    ) -> (f32, u32) {
        if self.err.is_some() {
            return (f32::NAN, 0);
        }
        match self.softmax_xent_impl(n, classes, logits, labels, dlogits) {
            Ok(r) => r,
            Err(e) => {
                self.err = Some(e);
                (f32::NAN, 0)
            }
        }
    }

    fn sgd(&mut self, opt: &Sgd, lr: f32, param: Region, grad: Region, mom: Region) {
        self.run(|e| {
            let n = param.len;
            need(grad, n, "gradient")?;
            need(mom, n, "momentum")?;
            e.launch(
                Kernel::Sgd,
                n,
                &[
                    Arg::Buf(param),
                    Arg::Buf(grad.prefix(n)),
                    Arg::Buf(mom.prefix(n)),
                    i64_of(n),
                    Arg::F32(lr),
                    Arg::F32(opt.momentum),
                    Arg::F32(opt.weight_decay),
                    Arg::I32(i32::from(opt.nesterov)),
                ],
            )
        });
    }
}
