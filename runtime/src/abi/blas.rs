//! A native `dgemm_`, the BLAS routine behind R's `%*%`, `crossprod` and
//! LAPACK's blocked factorisations.
//!
//! webR's wasm BLAS pays for the deadline backstop: wasmtime's epoch check on
//! every loop back-edge makes its `dgemm` ~3x slower. This host version reads
//! the operands where they lie in guest memory, after checking every extent,
//! alignment and overlap; anything it does not handle (bad arguments, which
//! the reference BLAS reports through `xerbla`, unaligned or aliased
//! operands, degenerate sizes) goes to the wasm `dgemm_` unchanged. It works
//! in column blocks and asks the stop context's backstop between them, so a
//! huge product cannot outlive it.

use super::mem;
use crate::store::StoreData;
use wasmtime::{Caller, Extern, Linker, Result, Val};

/// Work per block between backstop checks, in floating-point operations.
const BLOCK_FLOPS: usize = 64 << 20;

pub fn add_to_linker(l: &mut Linker<StoreData>) -> Result<()> {
    l.func_wrap(
        "env",
        "dgemm_",
        |mut c: Caller<'_, StoreData>,
         ta: u32,
         tb: u32,
         m: u32,
         n: u32,
         k: u32,
         alpha: u32,
         a: u32,
         lda: u32,
         b: u32,
         ldb: u32,
         beta: u32,
         cm: u32,
         ldc: u32,
         la: u32,
         lb: u32|
         -> Result<()> {
            let args = [
                ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, cm, ldc, la, lb,
            ];
            let plan = {
                let (memory, _) = mem::split(&mut c);
                Gemm::plan(memory, &args)
            };
            match plan {
                Some(g) => g.run(&mut c),
                None => delegate(&mut c, &args),
            }
        },
    )?;
    Ok(())
}

/// A checked `C := alpha op(A) op(B) + beta C`, offsets and strides in
/// elements of guest memory.
#[derive(Debug, PartialEq)]
struct Gemm {
    m: usize,
    n: usize,
    k: usize,
    alpha: f64,
    beta: f64,
    a: usize,
    rsa: isize,
    csa: isize,
    b: usize,
    rsb: isize,
    csb: isize,
    /// Elements between the starts of two columns of op(B).
    b_col: usize,
    c: usize,
    ldc: usize,
}

impl Gemm {
    /// Validate the Fortran arguments against `memory`; `None` means "let
    /// the reference BLAS handle it".
    fn plan(memory: &[u8], args: &[u32; 15]) -> Option<Gemm> {
        let [ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, _, _] = *args;
        let trans = |p: u32| match mem::bytes(memory, p, 1).ok()?[0] {
            b'N' | b'n' => Some(false),
            b'T' | b't' | b'C' | b'c' => Some(true),
            _ => None,
        };
        let int = |p: u32| usize::try_from(mem::read_i32(memory, p).ok()?).ok();
        let real = |p: u32| Some(f64::from_bits(mem::read_u64(memory, p).ok()?));
        let (ta, tb) = (trans(ta)?, trans(tb)?);
        let (m, n, k) = (int(m)?, int(n)?, int(k)?);
        let (lda, ldb, ldc) = (int(lda)?, int(ldb)?, int(ldc)?);
        let (alpha, beta) = (real(alpha)?, real(beta)?);
        if m == 0 || n == 0 || k == 0 || alpha == 0.0 {
            return None;
        }
        let (rows_a, cols_a) = if ta { (k, m) } else { (m, k) };
        let (rows_b, cols_b) = if tb { (n, k) } else { (k, n) };
        if lda < rows_a || ldb < rows_b || ldc < m {
            return None;
        }
        let ra = extent(memory, a, lda, rows_a, cols_a)?;
        let rb = extent(memory, b, ldb, rows_b, cols_b)?;
        let rc = extent(memory, c, ldc, m, n)?;
        if overlaps(&rc, &ra) || overlaps(&rc, &rb) {
            return None;
        }
        let (lda, ldb) = (lda as isize, ldb as isize);
        let (rsa, csa) = if ta { (lda, 1) } else { (1, lda) };
        let (rsb, csb) = if tb { (ldb, 1) } else { (1, ldb) };
        Some(Gemm {
            m,
            n,
            k,
            alpha,
            beta,
            a: a as usize / 8,
            rsa,
            csa,
            b: b as usize / 8,
            rsb,
            csb,
            b_col: csb as usize,
            c: c as usize / 8,
            ldc,
        })
    }

    fn run(&self, c: &mut Caller<'_, StoreData>) -> Result<()> {
        let cols_per_block = (BLOCK_FLOPS / (2 * self.m * self.k).max(1)).max(1);
        let memory = c
            .data()
            .memory
            .ok_or_else(|| wasmtime::format_err!("no memory"))?;
        let mut j = 0;
        while j < self.n {
            let nb = cols_per_block.min(self.n - j);
            let base = memory.data_mut(&mut *c).as_mut_ptr() as *mut f64;
            // SAFETY: `plan` checked that every element op(A), op(B) and C
            // can reach lies inside guest memory, that the operands are
            // 8-byte aligned (guest offsets are multiples of 8 and the memory
            // is page aligned), and that C overlaps neither A nor B. No wasm
            // runs during a host call, so nothing else touches the memory.
            unsafe {
                matrixmultiply::dgemm(
                    self.m,
                    self.k,
                    nb,
                    self.alpha,
                    base.add(self.a),
                    self.rsa,
                    self.csa,
                    base.add(self.b + j * self.b_col),
                    self.rsb,
                    self.csb,
                    self.beta,
                    base.add(self.c + j * self.ldc),
                    1,
                    self.ldc as isize,
                );
            }
            j += nb;
            if j < self.n && c.data_mut().stop.backstop() {
                return Err(wasmtime::Trap::Interrupt.into());
            }
        }
        Ok(())
    }
}

/// The byte range a column-major `rows x cols` operand with leading
/// dimension `ld` at guest address `p` spans, if it is inside memory and
/// 8-byte aligned.
fn extent(
    memory: &[u8],
    p: u32,
    ld: usize,
    rows: usize,
    cols: usize,
) -> Option<std::ops::Range<usize>> {
    if !p.is_multiple_of(8) {
        return None;
    }
    let elems = ld.checked_mul(cols - 1)?.checked_add(rows)?;
    let bytes = u32::try_from(elems.checked_mul(8)?).ok()?;
    mem::range(memory, p, bytes).ok()
}

fn overlaps(x: &std::ops::Range<usize>, y: &std::ops::Range<usize>) -> bool {
    x.start < y.end && y.start < x.end
}

/// Hand the call to the wasm BLAS (libRblas) as it is.
fn delegate(c: &mut Caller<'_, StoreData>, args: &[u32; 15]) -> Result<()> {
    let libs: Vec<wasmtime::Instance> = c
        .data()
        .linking
        .libs
        .iter()
        .skip(1)
        .map(|l| l.instance)
        .collect();
    for inst in libs {
        if let Some(Extern::Func(f)) = inst.get_export(&mut *c, "dgemm_") {
            let params: Vec<Val> = args.iter().map(|&v| Val::I32(v as i32)).collect();
            return f.call(&mut *c, &params, &mut []);
        }
    }
    wasmtime::bail!("undefined symbol: dgemm_ (libRblas is not loaded)")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guest memory with the scalar arguments at fixed places; `dims` is
    /// (m, n, k, lda, ldb, ldc).
    fn setup(ta: u8, tb: u8, dims: [i32; 6]) -> (Vec<u8>, [u32; 15]) {
        let mut memory = vec![0u8; 1 << 16];
        memory[0] = ta;
        memory[1] = tb;
        for (i, v) in dims.iter().enumerate() {
            memory[8 + 4 * i..12 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        memory[40..48].copy_from_slice(&1.0f64.to_le_bytes());
        memory[48..56].copy_from_slice(&0.0f64.to_le_bytes());
        (
            memory,
            [0, 1, 8, 12, 16, 40, 1024, 20, 8192, 24, 48, 16384, 28, 1, 1],
        )
    }

    #[test]
    fn plans_a_plain_product() {
        let (memory, args) = setup(b'N', b'T', [3, 2, 4, 3, 2, 3]);
        let g = Gemm::plan(&memory, &args).unwrap();
        assert_eq!((g.m, g.n, g.k), (3, 2, 4));
        assert_eq!((g.rsa, g.csa, g.rsb, g.csb), (1, 3, 2, 1));
        assert_eq!((g.a, g.b, g.c), (128, 1024, 2048));
    }

    #[test]
    fn refuses_what_it_cannot_prove_safe() {
        // leading dimension too small: the reference BLAS reports it
        let (memory, args) = setup(b'N', b'N', [3, 2, 4, 2, 4, 3]);
        assert_eq!(Gemm::plan(&memory, &args), None);
        // bad transpose letter
        let (memory, args) = setup(b'X', b'N', [3, 2, 4, 3, 4, 3]);
        assert_eq!(Gemm::plan(&memory, &args), None);
        // operand past the end of memory
        let (memory, mut args) = setup(b'N', b'N', [3, 2, 4, 3, 4, 3]);
        args[6] = (1 << 16) - 8;
        assert_eq!(Gemm::plan(&memory, &args), None);
        // unaligned operand
        let (memory, mut args) = setup(b'N', b'N', [3, 2, 4, 3, 4, 3]);
        args[6] = 1028;
        assert_eq!(Gemm::plan(&memory, &args), None);
        // C aliases A
        let (memory, mut args) = setup(b'N', b'N', [3, 2, 4, 3, 4, 3]);
        args[11] = 1024;
        assert_eq!(Gemm::plan(&memory, &args), None);
        // negative size
        let (memory, args) = setup(b'N', b'N', [-1, 2, 4, 3, 4, 3]);
        assert_eq!(Gemm::plan(&memory, &args), None);
        // huge leading dimension overflowing the extent
        let (memory, args) = setup(b'N', b'N', [3, 2, 4, i32::MAX, 4, 3]);
        assert_eq!(Gemm::plan(&memory, &args), None);
    }
}
