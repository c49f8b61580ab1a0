//! Elementwise operations: each output chunk is the operands' chunks under one more operation,
//! fused into their expressions (computed first only when the expression is already deep).

use super::{Array, Block, Expr};
use crate::error::ArrayError;
use crate::ops::{BinOp, UnOp};

impl Array {
    pub fn unary(&self, op: UnOp) -> Array {
        self.map_blocks(|b| Block::new(b.shape().to_vec(), Expr::Un(op, b.operand())))
    }

    /// `self op value` (or `value op self` when `scalar_first`).
    pub fn scalar_op(&self, op: BinOp, value: f64, scalar_first: bool) -> Array {
        self.map_blocks(|b| {
            let s = Block::new(b.shape().to_vec(), Expr::Full(value));
            let (l, r) = if scalar_first {
                (s, b.operand())
            } else {
                (b.operand(), s)
            };
            Block::new(b.shape().to_vec(), Expr::Bin(op, l, r))
        })
    }

    /// `self op other`, for arrays of the same shape and chunks, or where one is 0-d.
    pub fn elementwise(&self, op: BinOp, other: &Array) -> Result<Array, ArrayError> {
        if other.ndim() == 0 && self.ndim() > 0 {
            let s = other.blocks[0].computed();
            return Ok(self.map_blocks(|b| {
                Block::new(b.shape().to_vec(), Expr::Bin(op, b.operand(), s.clone()))
            }));
        }
        if self.ndim() == 0 && other.ndim() > 0 {
            let s = self.blocks[0].computed();
            return Ok(other.map_blocks(|b| {
                Block::new(b.shape().to_vec(), Expr::Bin(op, s.clone(), b.operand()))
            }));
        }
        if self.shape() != other.shape() {
            return Err(ArrayError::Shape(format!(
                "{} of arrays of shapes {:?} and {:?}",
                op.name(),
                self.shape(),
                other.shape()
            )));
        }
        if self.chunks() != other.chunks() {
            return Err(ArrayError::Chunks(format!(
                "{} of arrays with different chunks {:?} and {:?}; rechunk one of them",
                op.name(),
                self.chunks(),
                other.chunks()
            )));
        }
        let blocks = self
            .blocks
            .iter()
            .zip(&other.blocks)
            .map(|(a, b)| Block::new(a.shape().to_vec(), Expr::Bin(op, a.operand(), b.operand())))
            .collect();
        Ok(self.with_blocks(self.grid.clone(), blocks))
    }

    pub fn add(&self, other: &Array) -> Result<Array, ArrayError> {
        self.elementwise(BinOp::Add, other)
    }

    pub fn sub(&self, other: &Array) -> Result<Array, ArrayError> {
        self.elementwise(BinOp::Sub, other)
    }

    pub fn mul(&self, other: &Array) -> Result<Array, ArrayError> {
        self.elementwise(BinOp::Mul, other)
    }

    pub fn div(&self, other: &Array) -> Result<Array, ArrayError> {
        self.elementwise(BinOp::Div, other)
    }

    /// 1.0 where `self < other`, else 0.0 (NumPy's `less`); likewise the other comparisons.
    pub fn less(&self, other: &Array) -> Result<Array, ArrayError> {
        self.elementwise(BinOp::Less, other)
    }

    pub fn less_equal(&self, other: &Array) -> Result<Array, ArrayError> {
        self.elementwise(BinOp::LessEqual, other)
    }

    pub fn greater(&self, other: &Array) -> Result<Array, ArrayError> {
        self.elementwise(BinOp::Greater, other)
    }

    pub fn greater_equal(&self, other: &Array) -> Result<Array, ArrayError> {
        self.elementwise(BinOp::GreaterEqual, other)
    }

    pub fn equal(&self, other: &Array) -> Result<Array, ArrayError> {
        self.elementwise(BinOp::Equal, other)
    }

    pub fn not_equal(&self, other: &Array) -> Result<Array, ArrayError> {
        self.elementwise(BinOp::NotEqual, other)
    }

    pub fn sqrt(&self) -> Array {
        self.unary(UnOp::Sqrt)
    }

    pub fn exp(&self) -> Array {
        self.unary(UnOp::Exp)
    }

    /// The natural logarithm.
    pub fn log(&self) -> Array {
        self.unary(UnOp::Log)
    }

    pub fn abs(&self) -> Array {
        self.unary(UnOp::Abs)
    }

    pub fn sin(&self) -> Array {
        self.unary(UnOp::Sin)
    }

    pub fn cos(&self) -> Array {
        self.unary(UnOp::Cos)
    }
}

macro_rules! scalar_ops {
    ($($tr:ident $method:ident $op:ident),*) => {$(
        impl std::ops::$tr<f64> for &Array {
            type Output = Array;
            fn $method(self, v: f64) -> Array {
                self.scalar_op(BinOp::$op, v, false)
            }
        }
        impl std::ops::$tr<&Array> for f64 {
            type Output = Array;
            fn $method(self, a: &Array) -> Array {
                a.scalar_op(BinOp::$op, self, true)
            }
        }
    )*};
}

scalar_ops!(Add add Add, Sub sub Sub, Mul mul Mul, Div div Div);

impl std::ops::Neg for &Array {
    type Output = Array;
    fn neg(self) -> Array {
        self.unary(UnOp::Neg)
    }
}
