//! Timing training steps: the median of timed calls (`nas-pipe device-check`), the rate of
//! a run of calls (the budget's calibration), and random batches of a data set's shape to
//! time them on.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use crate::spec::space::Input;

/// The median of `runs` (at least 1) timed calls of `step` after `warmup` untimed ones,
/// each ended by a device synchronisation.
pub fn median_seconds(
    dev: &Device,
    warmup: usize,
    runs: usize,
    step: &mut dyn FnMut() -> candle_core::Result<()>,
) -> candle_core::Result<f64> {
    for _ in 0..warmup {
        step()?;
    }
    dev.synchronize()?;
    let runs = runs.max(1);
    let mut t = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        step()?;
        dev.synchronize()?;
        t.push(start.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    Ok(t[runs / 2])
}

/// Items per second of `runs` (at least 1) timed calls of `step` after `warmup` untimed
/// ones: the items the timed calls return over their whole time, ended by a device
/// synchronisation, so that slow calls count as they do in a real epoch.
pub fn rate(
    dev: &Device,
    warmup: usize,
    runs: usize,
    step: &mut dyn FnMut() -> candle_core::Result<usize>,
) -> candle_core::Result<f64> {
    for _ in 0..warmup {
        step()?;
    }
    dev.synchronize()?;
    let start = Instant::now();
    let mut items = 0;
    for _ in 0..runs.max(1) {
        items += step()?;
    }
    dev.synchronize()?;
    Ok(items as f64 / start.elapsed().as_secs_f64().max(1e-9))
}

/// `batch` images of `input`'s shape, uniform in [0, 1) (seeded), and labels cycling
/// through its classes, on `dev`.
pub fn random_batch(
    input: Input,
    batch: usize,
    dev: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let (c, s) = (input.channels as usize, input.size as usize);
    let x = crate::kernels::probe::uniform(&[batch, c, s, s], DType::F32, 7)?.to_device(dev)?;
    let classes = input.classes.max(1);
    let y: Vec<u32> = (0..batch as u32).map(|i| i % classes).collect();
    Ok((x, Tensor::from_vec(y, batch, dev)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_the_timed_calls_only() {
        let mut calls = 0;
        let t = median_seconds(&Device::Cpu, 2, 3, &mut || {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(calls, 5);
        assert!((0.0..0.1).contains(&t));
    }

    #[test]
    fn the_rate_counts_the_timed_calls_items_only() {
        let mut calls = 0;
        let r = rate(&Device::Cpu, 1, 4, &mut || {
            calls += 1;
            std::thread::sleep(std::time::Duration::from_millis(5));
            Ok(if calls == 1 { 1_000_000 } else { 10 })
        })
        .unwrap();
        assert_eq!(calls, 5);
        // 40 items in at least 20 ms: at most 2,000/s; the warm-up's million not counted.
        assert!(r > 0.0 && r <= 2_000.0, "{r}");
    }

    #[test]
    fn a_random_batch_has_the_inputs_shape_and_its_classes() {
        let input = Input {
            channels: 3,
            size: 8,
            classes: 4,
        };
        let (x, y) = random_batch(input, 6, &Device::Cpu).unwrap();
        assert_eq!(x.dims(), [6, 3, 8, 8]);
        assert_eq!(y.to_vec1::<u32>().unwrap(), [0, 1, 2, 3, 0, 1]);
    }
}
