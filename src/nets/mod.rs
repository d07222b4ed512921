//! Networks built from a space: the final network of one architecture ([`model`]), the
//! weight-sharing supernet ([`supernet`]), the fixed blocks around cells ([`blocks`]), their
//! ONNX lowering ([`export`]), optimizers ([`optim`]), the training step ([`train`]) and the
//! weight average ([`average`]).

pub mod average;
pub mod blocks;
pub mod export;
pub mod model;
pub mod optim;
pub mod supernet;
pub mod timing;
pub mod train;
