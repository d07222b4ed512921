//! The ONNX reader of `predict`, `profile` and `validate` (`runtime::model_file`): the
//! input is a model file's bytes. Every input must be accepted or refused with an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = nas_pipe::runtime::model_file::looks_like_onnx(data);
    let _ = nas_pipe::runtime::model_file::initializers(data);
});
