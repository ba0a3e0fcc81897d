//! Minimal writer for NumPy `.npy` files (format version 1.0, little-endian `<f4`, C order).

use std::io::Write;
use std::path::Path;

use crate::AudioError;

/// Writes `data` with the given `shape` as a little-endian float32 `.npy` file, readable with
/// `numpy.load`.
pub fn write_npy_f32(
    path: impl AsRef<Path>,
    data: &[f32],
    shape: &[usize],
) -> Result<(), AudioError> {
    let path = path.as_ref();
    let n: usize = shape.iter().product();
    if n != data.len() {
        return Err(AudioError::InvalidConfig(format!(
            "npy shape {shape:?} holds {n} values but {} were given",
            data.len()
        )));
    }
    let dims = match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {dims}, }}");
    // Magic (6) + version (2) + header length (2) + header + '\n' must be a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.div_ceil(64) * 64 - unpadded));
    header.push('\n');
    let header_len = u16::try_from(header.len()).map_err(|_| {
        AudioError::InvalidConfig(format!("npy header too long for shape {shape:?}"))
    })?;
    let mut bytes = Vec::with_capacity(10 + header.len() + 4 * data.len());
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&header_len.to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for &x in data {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    let mut f = std::fs::File::create(path).map_err(|e| AudioError::io(path, e))?;
    f.write_all(&bytes).map_err(|e| AudioError::io(path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_aligned_and_parsable() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("a.npy");
        write_npy_f32(&p, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
        let b = std::fs::read(&p)?;
        assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
        let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hl) % 64, 0);
        let header = std::str::from_utf8(&b[10..10 + hl])?;
        assert!(header.contains("'shape': (2, 3)"));
        assert!(header.ends_with('\n'));
        assert_eq!(b.len(), 10 + hl + 24);
        assert_eq!(
            f32::from_le_bytes([b[10 + hl], b[11 + hl], b[12 + hl], b[13 + hl]]),
            1.0
        );
        assert!(write_npy_f32(&p, &[1.0], &[2]).is_err());
        Ok(())
    }
}
