//! Elementwise operations: what an array expression applies to its values, named in task
//! arguments by variant (serde), applied by the kernels one value at a time.

use serde::{Deserialize, Serialize};

/// An operation on one array.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnOp {
    Neg,
    Abs,
    Sqrt,
    Exp,
    Log,
    Square,
}

impl UnOp {
    /// NumPy's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            UnOp::Neg => "negative",
            UnOp::Abs => "abs",
            UnOp::Sqrt => "sqrt",
            UnOp::Exp => "exp",
            UnOp::Log => "log",
            UnOp::Square => "square",
        }
    }

    #[inline]
    pub(crate) fn apply(self, x: f64) -> f64 {
        match self {
            UnOp::Neg => -x,
            UnOp::Abs => x.abs(),
            UnOp::Sqrt => x.sqrt(),
            UnOp::Exp => x.exp(),
            UnOp::Log => x.ln(),
            UnOp::Square => x * x,
        }
    }
}

/// An operation on two arrays of the same shape (or an array and a scalar). Comparisons give
/// 1.0 for true and 0.0 for false, NaN comparing as NumPy's (unequal to everything).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Maximum,
    Minimum,
    Less,
    LessEqual,
    Greater,
    GreaterEqual,
    Equal,
    NotEqual,
}

impl BinOp {
    /// NumPy's name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            BinOp::Add => "add",
            BinOp::Sub => "subtract",
            BinOp::Mul => "multiply",
            BinOp::Div => "divide",
            BinOp::Pow => "power",
            BinOp::Maximum => "maximum",
            BinOp::Minimum => "minimum",
            BinOp::Less => "less",
            BinOp::LessEqual => "less_equal",
            BinOp::Greater => "greater",
            BinOp::GreaterEqual => "greater_equal",
            BinOp::Equal => "equal",
            BinOp::NotEqual => "not_equal",
        }
    }

    #[inline]
    pub(crate) fn apply(self, a: f64, b: f64) -> f64 {
        match self {
            BinOp::Add => a + b,
            BinOp::Sub => a - b,
            BinOp::Mul => a * b,
            BinOp::Div => a / b,
            BinOp::Pow => a.powf(b),
            BinOp::Maximum => nan_max(a, b),
            BinOp::Minimum => nan_min(a, b),
            BinOp::Less => truth(a < b),
            BinOp::LessEqual => truth(a <= b),
            BinOp::Greater => truth(a > b),
            BinOp::GreaterEqual => truth(a >= b),
            BinOp::Equal => truth(a == b),
            BinOp::NotEqual => truth(a != b),
        }
    }
}

#[inline]
fn truth(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// Minimum that propagates NaN, as NumPy's.
#[inline]
pub(crate) fn nan_min(m: f64, x: f64) -> f64 {
    if x < m || x.is_nan() { x } else { m }
}

/// Maximum that propagates NaN, as NumPy's.
#[inline]
pub(crate) fn nan_max(m: f64, x: f64) -> f64 {
    if x > m || x.is_nan() { x } else { m }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_are_numpy_truth_values() {
        assert_eq!(BinOp::Less.apply(1.0, 2.0), 1.0);
        assert_eq!(BinOp::GreaterEqual.apply(1.0, 2.0), 0.0);
        assert_eq!(BinOp::Equal.apply(2.0, 2.0), 1.0);
        // NaN is unequal to everything, itself included.
        assert_eq!(BinOp::Equal.apply(f64::NAN, f64::NAN), 0.0);
        assert_eq!(BinOp::NotEqual.apply(f64::NAN, f64::NAN), 1.0);
        assert_eq!(BinOp::LessEqual.apply(f64::NAN, 1.0), 0.0);
        assert!(BinOp::Maximum.apply(1.0, f64::NAN).is_nan());
        assert!(BinOp::Minimum.apply(f64::NAN, 1.0).is_nan());
    }
}
