//! The server side of RFC 6455 framing, written for the fan-out path.
//!
//! A WebSocket crate is not used because the fan-out path needs what its
//! API does not give: a frame written without a lock per frame, a header
//! encoded once per batch rather than per frame and connection, and no
//! read buffer held by an idle connection.
//!
//! - [`Reader`] (`read.rs`) holds no buffer while nothing is pending: it
//!   reads into a stack buffer and keeps bytes on the heap only while a
//!   frame is incomplete. It checks what RFC 6455 requires of a client's
//!   frames (masking, opcodes, reserved bits, control frame rules,
//!   fragmentation, UTF-8 of text, close codes) and the message size limit
//!   before buffering a payload.
//! - `Batch` (`batch.rs`) turns a writer's whole queue into one vectored
//!   write: small frames are copied (header and payload) into one buffer,
//!   large payloads are written from the shared message bytes without a
//!   copy.
//!
//! The handshake is done in `http::ws`; no extension is negotiated, so the
//! reserved bits must be zero.

mod batch;
mod read;

pub(crate) use batch::Batch;
pub use read::{Incoming, ReadError, Reader};

/// Frame opcodes (RFC 6455 section 5.2).
pub mod opcode {
    /// Continuation of a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// Text frame.
    pub const TEXT: u8 = 0x1;
    /// Binary frame.
    pub const BINARY: u8 = 0x2;
    /// Close frame.
    pub const CLOSE: u8 = 0x8;
    /// Ping frame.
    pub const PING: u8 = 0x9;
    /// Pong frame.
    pub const PONG: u8 = 0xA;
}

/// Unmasks (or masks: the same XOR) `data` with `key`, starting at key
/// position 0.
pub fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    let word = u32::from_ne_bytes(key);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (b, k) in chunks.into_remainder().iter_mut().zip(key) {
        *b ^= k;
    }
}

/// Appends a server frame header (FIN set, unmasked) for `len` payload bytes.
pub fn put_header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(n) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A client frame: masked with a fixed key.
    pub(crate) fn client(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = Vec::new();
        put_header(&mut out, op, payload.len());
        if !fin {
            out[0] &= 0x7F;
        }
        out[1] |= 0x80;
        out.extend_from_slice(&key);
        let mut p = payload.to_vec();
        apply_mask(&mut p, key);
        out.extend_from_slice(&p);
        out
    }

    #[test]
    fn mask_matches_bytewise_xor() {
        let key = [1, 2, 3, 250];
        for n in 0..20 {
            let data: Vec<u8> = (0..n as u8).collect();
            let mut a = data.clone();
            apply_mask(&mut a, key);
            let b: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, x)| x ^ key[i % 4])
                .collect();
            assert_eq!(a, b);
        }
    }
}
