//! Which vector instructions the preprocessing kernels run with, chosen once per call from what this CPU
//! has. Every variant computes the same integer arithmetic, so the bytes never depend on the CPU: tests
//! compare each variant this CPU runs ([`Isa::all`]) with the plain code.
//!
//! x86-64's baseline is SSE2, which has no 32-bit vector multiply: code compiled for it stays scalar. The
//! kernels are therefore also compiled for SSE4.1 (`pmulld`; boards such as the Celeron J4125) and AVX2
//! (8 lanes), and [`Isa::detect`] picks the best at run time. aarch64's baseline has NEON, so there the
//! portable build is already vectorised.

/// A set of instructions the kernels are compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    /// The target's baseline: SSE2 on x86-64, NEON on aarch64.
    Portable,
    /// x86-64 with SSE4.1.
    #[cfg(target_arch = "x86_64")]
    Sse41,
    /// x86-64 with AVX2.
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Isa {
    /// The best this CPU runs (detected once by `std`, then a load).
    pub(crate) fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                return Isa::Avx2;
            }
            if std::arch::is_x86_feature_detected!("sse4.1") {
                return Isa::Sse41;
            }
        }
        Isa::Portable
    }

    /// Every variant this CPU runs, for tests that compare them.
    #[cfg(test)]
    pub(crate) fn all() -> Vec<Isa> {
        #[cfg(target_arch = "x86_64")]
        {
            let mut all = vec![Isa::Portable];
            if std::arch::is_x86_feature_detected!("sse4.1") {
                all.push(Isa::Sse41);
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                all.push(Isa::Avx2);
            }
            all
        }
        #[cfg(not(target_arch = "x86_64"))]
        vec![Isa::Portable]
    }
}
