//! TensorBoard event files: scalar summaries in the TFRecord framing TensorBoard reads.
//!
//! A file is a sequence of records `len: u64 LE, masked_crc32c(len): u32 LE, data,
//! masked_crc32c(data): u32 LE`, each `data` a serialized `tensorflow.Event` protobuf. Only
//! the fields scalars need are written: `wall_time` (1, double), `step` (2, int64),
//! `file_version` (3, string; the first event, `brain.Event:2`) and `summary` (5) holding
//! `Summary.Value { tag (1), simple_value (2, float) }` entries. The encoding is small enough
//! to write by hand; `tests/tensorboard.rs` reads the files back with TensorBoard's own
//! reader when it is installed, and the unit tests below pin the checksums to the CRC-32C
//! check value and a record built by hand.
//!
//! ```
//! use pixreg_runner::tfevents::EventFile;
//!
//! let mut file = EventFile::new(1_700_000_000.0);
//! file.scalars(1_700_000_001.5, 100, &[("train/ce", 2.25), ("train/lr", 0.01)]);
//! let bytes = file.into_bytes();
//! // Two records: the file version, then the scalars.
//! let first_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
//! assert_eq!(&bytes[12..12 + first_len][9..], b"\x1a\x0dbrain.Event:2");
//! ```

/// An event file being built in memory (runs log a few hundred scalars an epoch, so the file
/// is rewritten whole at each epoch commit rather than appended to).
#[derive(Debug, Clone)]
pub struct EventFile {
    bytes: Vec<u8>,
}

impl EventFile {
    /// A file whose first event, at `wall_time` (Unix seconds), declares the format version.
    pub fn new(wall_time: f64) -> Self {
        let mut event = Vec::new();
        put_double(&mut event, 1, wall_time);
        put_bytes(&mut event, 3, b"brain.Event:2");
        let mut file = Self { bytes: Vec::new() };
        file.record(&event);
        file
    }

    /// Appends one event holding `values` (tag, value) at `step`, logged at `wall_time`.
    /// Non-finite values are written as they are (TensorBoard shows NaN); callers leave out
    /// the ones that are undefined.
    pub fn scalars(&mut self, wall_time: f64, step: u64, values: &[(&str, f64)]) {
        let mut summary = Vec::new();
        for (tag, value) in values {
            let mut v = Vec::new();
            put_bytes(&mut v, 1, tag.as_bytes());
            put_float(&mut v, 2, *value as f32);
            put_bytes(&mut summary, 1, &v);
        }
        let mut event = Vec::new();
        put_double(&mut event, 1, wall_time);
        put_varint_field(&mut event, 2, step);
        put_bytes(&mut event, 5, &summary);
        self.record(&event);
    }

    /// The file's bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    fn record(&mut self, data: &[u8]) {
        let len = (data.len() as u64).to_le_bytes();
        self.bytes.extend_from_slice(&len);
        self.bytes
            .extend_from_slice(&masked_crc(&len).to_le_bytes());
        self.bytes.extend_from_slice(data);
        self.bytes
            .extend_from_slice(&masked_crc(data).to_le_bytes());
    }
}

/// CRC-32C (Castagnoli), as TFRecord uses it.
fn crc32c(data: &[u8]) -> u32 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, data) as u32
}

/// TFRecord's masked CRC: rotated right by 15 and offset, so that a CRC of data that itself
/// holds CRCs stays well distributed.
fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_key(out: &mut Vec<u8>, field: u64, wire_type: u64) {
    put_varint(out, (field << 3) | wire_type);
}

fn put_varint_field(out: &mut Vec<u8>, field: u64, value: u64) {
    put_key(out, field, 0);
    put_varint(out, value);
}

fn put_double(out: &mut Vec<u8>, field: u64, value: f64) {
    put_key(out, field, 1);
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_float(out: &mut Vec<u8>, field: u64, value: f32) {
    put_key(out, field, 5);
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_key(out, field, 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_its_check_value() {
        // The CRC catalogue's check value of CRC-32/ISCSI over "123456789".
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn a_scalar_event_is_framed_and_encoded_as_protobuf() {
        let mut file = EventFile::new(0.0);
        let header_len = file.bytes.len();
        file.scalars(2.0, 300, &[("a", 1.0)]);
        let bytes = file.into_bytes();
        let record = &bytes[header_len..];
        let expected_data: Vec<u8> = [
            vec![0x09],
            2.0f64.to_le_bytes().to_vec(),
            // step 300 = varint ac 02
            vec![0x10, 0xac, 0x02],
            // summary { value { tag "a", simple_value 1.0 } }
            vec![0x2a, 0x0a, 0x0a, 0x08, 0x0a, 0x01, b'a', 0x15],
            1.0f32.to_le_bytes().to_vec(),
        ]
        .concat();
        let len = u64::from_le_bytes(record[..8].try_into().unwrap()) as usize;
        assert_eq!(len, expected_data.len());
        assert_eq!(
            u32::from_le_bytes(record[8..12].try_into().unwrap()),
            masked_crc(&record[..8])
        );
        assert_eq!(&record[12..12 + len], expected_data.as_slice());
        assert_eq!(
            u32::from_le_bytes(record[12 + len..16 + len].try_into().unwrap()),
            masked_crc(&expected_data)
        );
        assert_eq!(record.len(), 16 + len);
    }
}
