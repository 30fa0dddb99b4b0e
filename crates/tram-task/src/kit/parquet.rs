//! What both task crates need from parquet's record API to read Hugging Face data sets.

use ::parquet::record::Field;

/// An integer cell of any width, signed or not, as `i64`; `None` for another type or a `u64` beyond `i64`.
pub fn integer(field: &Field) -> Option<i64> {
    match *field {
        Field::Byte(v) => Some(v as i64),
        Field::Short(v) => Some(v as i64),
        Field::Int(v) => Some(v as i64),
        Field::Long(v) => Some(v),
        Field::UByte(v) => Some(v as i64),
        Field::UShort(v) => Some(v as i64),
        Field::UInt(v) => Some(v as i64),
        Field::ULong(v) => i64::try_from(v).ok(),
        _ => None,
    }
}
