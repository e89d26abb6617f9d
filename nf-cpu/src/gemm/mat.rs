//! The operands of the GEMM: strided matrix views ([`Mat`], [`MatMut`]: element `(i, j)` at
//! `i·rs + j·cs`, so a transposed operand is just other strides) and [`Operand`].

/// A read-only strided matrix: element `(i, j)` is `data[i·rs + j·cs]`. Elements are f32
/// unless `T` says otherwise (the bf16 GEMM reads `Mat<'_, Bf16>`).
#[derive(Clone, Copy, Debug)]
pub struct Mat<'a, T = f32> {
    /// Backing storage.
    pub data: &'a [T],
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

impl<'a, T> Mat<'a, T> {
    /// A row-major `rows × cols` matrix (row stride `cols`).
    pub fn rows(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, cols, 1)
    }
    /// A view with explicit strides.
    ///
    /// # Panics
    /// If the last element lies outside `data`.
    pub fn new(data: &'a [T], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        assert!(
            rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < data.len(),
            "matrix view {rows}x{cols} (rs {rs}, cs {cs}) exceeds {} elements",
            data.len()
        );
        Mat {
            data,
            rows,
            cols,
            rs,
            cs,
        }
    }
    /// The transpose (same storage).
    pub fn t(self) -> Self {
        Mat {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }
}

/// A mutable strided matrix: element `(i, j)` is `data[i·rs + j·cs]`.
#[derive(Debug)]
pub struct MatMut<'a> {
    /// Backing storage.
    pub data: &'a mut [f32],
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

impl<'a> MatMut<'a> {
    /// A row-major `rows × cols` matrix.
    pub fn rows(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, cols, 1)
    }
    /// A view with explicit strides.
    ///
    /// # Panics
    /// If the last element lies outside `data`.
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        assert!(
            rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < data.len(),
            "matrix view {rows}x{cols} (rs {rs}, cs {cs}) exceeds {} elements",
            data.len()
        );
        MatMut {
            data,
            rows,
            cols,
            rs,
            cs,
        }
    }
}

/// An operand: a strided view, or the same matrix already packed by `gemm::pack_a` /
/// `gemm::pack_b` (`gemm::bf16::pack_a` / `pack_b` for `Operand<'_, Bf16>`).
#[derive(Clone, Copy, Debug)]
pub enum Operand<'a, T = f32> {
    /// Packed on the fly, block by block.
    View(Mat<'a, T>),
    /// Packed in advance (the whole matrix, in the layout this kernel uses).
    Packed(&'a [T]),
}
