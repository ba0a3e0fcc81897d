//! Batching: stack per-sample `f32` buffers (e.g. the row-major clips and spectrograms of a
//! `ReplaiSample`) into one candle tensor with a leading batch axis.

use candle_core::{Device, Tensor};

use crate::error::DataError;

/// Stacks `items` (each a row-major buffer of `item_shape`) into a `(N, *item_shape)` tensor.
/// Every buffer must hold exactly `prod(item_shape)` values; the batch must not be empty.
///
/// ```
/// # use candle_core::Device;
/// let a = [1.0f32, 2.0, 3.0, 4.0];
/// let b = [5.0f32, 6.0, 7.0, 8.0];
/// let t = av_data::stack_f32(&[&a, &b], &[2, 2], &Device::Cpu).unwrap();
/// assert_eq!(t.dims(), &[2, 2, 2]);
/// ```
pub fn stack_f32(
    items: &[&[f32]],
    item_shape: &[usize],
    device: &Device,
) -> Result<Tensor, DataError> {
    if items.is_empty() {
        return Err(DataError::Shape("empty batch".into()));
    }
    let per: usize = item_shape.iter().product();
    if per == 0 {
        return Err(DataError::Shape(format!(
            "item shape {item_shape:?} has no elements"
        )));
    }
    let mut flat = Vec::with_capacity(per * items.len());
    for (i, it) in items.iter().enumerate() {
        if it.len() != per {
            return Err(DataError::Shape(format!(
                "item {i} has {} values, shape {item_shape:?} needs {per}",
                it.len()
            )));
        }
        flat.extend_from_slice(it);
    }
    let mut shape = Vec::with_capacity(item_shape.len() + 1);
    shape.push(items.len());
    shape.extend_from_slice(item_shape);
    Ok(Tensor::from_vec(flat, shape, device)?)
}

/// Class ids as a `(N,)` `u32` tensor (the dtype candle's cross-entropy expects); fails on ids
/// that do not fit in `u32`.
pub fn stack_labels(labels: &[usize], device: &Device) -> Result<Tensor, DataError> {
    let v: Vec<u32> = labels
        .iter()
        .map(|&l| {
            u32::try_from(l).map_err(|_| DataError::Shape(format!("label {l} does not fit in u32")))
        })
        .collect::<Result<_, _>>()?;
    let n = v.len();
    Ok(Tensor::from_vec(v, n, device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacks_and_checks_shapes() -> Result<(), DataError> {
        let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [7.0f32, 8.0, 9.0, 10.0, 11.0, 12.0];
        let t = stack_f32(&[&a, &b], &[3, 2], &Device::Cpu)?;
        assert_eq!(t.dims(), &[2, 3, 2]);
        let back: Vec<Vec<Vec<f32>>> = t.to_vec3()?;
        assert_eq!(back[1][2], vec![11.0, 12.0]);
        assert_eq!(back[0][1], vec![3.0, 4.0]);
        assert!(matches!(
            stack_f32(&[&a[..5]], &[3, 2], &Device::Cpu),
            Err(DataError::Shape(_))
        ));
        assert!(matches!(
            stack_f32(&[], &[3, 2], &Device::Cpu),
            Err(DataError::Shape(_))
        ));
        assert!(matches!(
            stack_f32(&[&a], &[0, 2], &Device::Cpu),
            Err(DataError::Shape(_))
        ));
        let l = stack_labels(&[3, 0, 7], &Device::Cpu)?;
        assert_eq!(l.to_vec1::<u32>()?, vec![3, 0, 7]);
        Ok(())
    }
}
