//! The ggml tensor types a GGUF file may hold, and dequantization to float32 of those this reader knows, block by
//! block as ggml's `dequantize_row_*` does.

use half::{bf16, f16};

/// The ggml tensor types this reader dequantizes (the others are named in the error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Bf16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
}

impl GgmlType {
    pub(super) fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            30 => Self::Bf16,
            _ => return None,
        })
    }

    /// (elements per block, bytes per block), as in ggml's type traits.
    pub(super) fn block(self) -> (usize, usize) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::Bf16 => (1, 2),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 => (32, 20),
            Self::Q5_0 => (32, 22),
            Self::Q5_1 => (32, 24),
            Self::Q8_0 => (32, 34),
        }
    }
}

/// A ggml type id that this reader does not dequantize, with its ggml name where known.
pub(super) fn type_name(id: u32) -> String {
    const NAMES: [&str; 31] = [
        "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
        "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16",
        "I32", "I64", "F64", "IQ1_M", "BF16",
    ];
    NAMES.get(id as usize).map_or_else(|| format!("type {id}"), |n| n.to_string())
}

/// Dequantizes the blocks of one tensor (ggml's `dequantize_row_*`).
pub fn dequantize(ty: GgmlType, raw: &[u8]) -> Vec<f32> {
    let (per_block, block_bytes) = ty.block();
    let mut out = Vec::with_capacity(raw.len() / block_bytes * per_block);
    let h = |b: &[u8], i: usize| f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
    for b in raw.chunks_exact(block_bytes) {
        match ty {
            GgmlType::F32 => out.push(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            GgmlType::F16 => out.push(h(b, 0)),
            GgmlType::Bf16 => out.push(bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            GgmlType::Q8_0 => {
                let d = h(b, 0);
                out.extend(b[2..34].iter().map(|&q| q as i8 as f32 * d));
            }
            GgmlType::Q4_0 => {
                let (d, qs) = (h(b, 0), &b[2..18]);
                out.extend(qs.iter().map(|&q| ((q & 0x0f) as i32 - 8) as f32 * d));
                out.extend(qs.iter().map(|&q| ((q >> 4) as i32 - 8) as f32 * d));
            }
            GgmlType::Q4_1 => {
                let (d, m, qs) = (h(b, 0), h(b, 2), &b[4..20]);
                out.extend(qs.iter().map(|&q| (q & 0x0f) as f32 * d + m));
                out.extend(qs.iter().map(|&q| (q >> 4) as f32 * d + m));
            }
            GgmlType::Q5_0 | GgmlType::Q5_1 => {
                let (d, m, rest) = match ty {
                    GgmlType::Q5_0 => (h(b, 0), None, &b[2..]),
                    _ => (h(b, 0), Some(h(b, 2)), &b[4..]),
                };
                let qh = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
                let qs = &rest[4..20];
                // The fifth bit of element j is bit j of qh; of element j + 16, bit j + 16.
                let value = |q: u32, hi: u32| -> f32 {
                    let x = q | (hi << 4);
                    match m {
                        None => (x as i32 - 16) as f32 * d,
                        Some(m) => x as f32 * d + m,
                    }
                };
                out.extend((0..16).map(|j| value((qs[j] & 0x0f) as u32, (qh >> j) & 1)));
                out.extend((0..16).map(|j| value((qs[j] >> 4) as u32, (qh >> (j + 16)) & 1)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_dequantize_by_hand() {
        // Q4_0: d = 0.5 (f16 0x3800); nibbles 0x0..0xf give (q - 8) * d.
        let mut b = vec![0x00, 0x38];
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let v = dequantize(GgmlType::Q4_0, &b);
        assert_eq!(v.len(), 32);
        assert_eq!((v[0], v[15], v[16], v[31]), (-4.0, 3.5, 3.5, -4.0));
        // Q8_0: d = 2, q = -3.
        let mut b = vec![0x00, 0x40];
        b.extend([0xfdu8; 32]);
        assert!(dequantize(GgmlType::Q8_0, &b).iter().all(|&x| x == -6.0));
        // Q5_1: d = 1, m = -1; element 0 has qh bit 0 set and low nibble 1: (1 | 16) * 1 - 1 = 16.
        let mut b = vec![0x00, 0x3c, 0x00, 0xbc, 0x01, 0, 0, 0, 0x01];
        b.extend([0u8; 15]);
        let v = dequantize(GgmlType::Q5_1, &b);
        assert_eq!((v[0], v[1], v[16]), (16.0, -1.0, -1.0));
    }
}
