//! Keyframe detection on the first bytes of an RTP payload, per codec.
//!
//! Only the start of a keyframe matters to the forwarder: a subscriber that waits
//! for a keyframe starts (or switches layer) at the packet that opens one.

/// Codecs the engine forwards. Audio codecs never need a keyframe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecKind {
    Opus,
    Vp8,
    H264,
    Vp9,
    Av1,
    /// RFC 2198 redundant audio (`audio/red`) wrapping Opus.
    Red,
    /// Negotiated but not understood: forwarded, never waited on.
    Other,
}

impl CodecKind {
    /// Map str0m's codec enum.
    pub fn from_codec(c: str0m::format::Codec) -> Self {
        use str0m::format::Codec;
        match c {
            Codec::Opus => Self::Opus,
            Codec::Vp8 => Self::Vp8,
            Codec::H264 => Self::H264,
            Codec::Vp9 => Self::Vp9,
            Codec::Av1 => Self::Av1,
            Codec::Red => Self::Red,
            _ => Self::Other,
        }
    }

    /// Name reported to the control plane.
    pub fn name(self) -> &'static str {
        match self {
            Self::Opus => "opus",
            Self::Vp8 => "vp8",
            Self::H264 => "h264",
            Self::Vp9 => "vp9",
            Self::Av1 => "av1",
            Self::Red => "red",
            Self::Other => "other",
        }
    }

    /// Whether a subscriber must wait for a keyframe before decoding this codec.
    pub fn needs_keyframe(self) -> bool {
        matches!(self, Self::Vp8 | Self::H264 | Self::Vp9 | Self::Av1)
    }
}

/// True when `payload` is the first packet of a keyframe for `codec`.
/// Never panics on malformed input; garbage is simply "not a keyframe".
pub fn is_keyframe_start(codec: CodecKind, payload: &[u8]) -> bool {
    match codec {
        CodecKind::Vp8 => vp8(payload),
        CodecKind::H264 => h264(payload),
        CodecKind::Vp9 => vp9(payload),
        CodecKind::Av1 => av1(payload),
        CodecKind::Opus | CodecKind::Red | CodecKind::Other => true,
    }
}

/// RFC 7741: payload descriptor, then the VP8 payload header whose P bit is 0 on
/// keyframes. Only meaningful at the start (S=1) of partition 0.
fn vp8(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let start = b0 & 0x10 != 0;
    let pid = b0 & 0x07;
    if !start || pid != 0 {
        return false;
    }
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let Some(&x) = p.get(i) else { return false };
        i += 1;
        if x & 0x80 != 0 {
            // I: picture id, one byte or two (M bit).
            let Some(&pic) = p.get(i) else { return false };
            i += if pic & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // L: TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // T or K: TID/Y/KEYIDX
        }
    }
    matches!(p.get(i), Some(h) if h & 0x01 == 0)
}

fn h264_nal_is_key(nal_type: u8) -> bool {
    // 5 = IDR slice, 7 = SPS (sent just before an IDR by every encoder we meet).
    nal_type == 5 || nal_type == 7
}

/// RFC 6184: single NAL, STAP-A (24) or FU-A (28) start fragment.
fn h264(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    match b0 & 0x1f {
        24 => {
            let mut i = 1;
            while i + 2 < p.len() {
                let size = u16::from_be_bytes([p[i], p[i + 1]]) as usize;
                let Some(&nal) = p.get(i + 2) else { return false };
                if size == 0 {
                    return false;
                }
                if h264_nal_is_key(nal & 0x1f) {
                    return true;
                }
                i += 2 + size;
            }
            false
        }
        28 => matches!(p.get(1), Some(&fu) if fu & 0x80 != 0 && h264_nal_is_key(fu & 0x1f)),
        t => h264_nal_is_key(t),
    }
}

/// draft-ietf-payload-vp9: P=0 (not inter-predicted), B=1 (start of frame) on the
/// base spatial layer.
fn vp9(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let inter = b0 & 0x40 != 0;
    let begin = b0 & 0x08 != 0;
    if inter || !begin {
        return false;
    }
    if b0 & 0x20 == 0 {
        return true; // no layer indices: single layer
    }
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let Some(&pic) = p.get(i) else { return false };
        i += if pic & 0x80 != 0 { 2 } else { 1 };
    }
    matches!(p.get(i), Some(l) if (l >> 1) & 0x07 == 0)
}

/// AV1 RTP: the aggregation header's N bit opens a new coded video sequence.
fn av1(p: &[u8]) -> bool {
    matches!(p.first(), Some(b) if b & 0x08 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframe_with_extended_descriptor() {
        // X=1,S=1,PID=0 | I=1 | M=1 picture id (2 bytes) | P=0
        assert!(vp8(&[0x90, 0x80, 0x81, 0x23, 0x10, 0, 0]));
        // same, P=1 (interframe)
        assert!(!vp8(&[0x90, 0x80, 0x81, 0x23, 0x11, 0, 0]));
        // not a start
        assert!(!vp8(&[0x80, 0x80, 0x81, 0x23, 0x10]));
        assert!(vp8(&[0x10, 0x00]));
        assert!(!vp8(&[]));
        assert!(!vp8(&[0x90, 0xff]));
    }

    #[test]
    fn h264_variants() {
        assert!(h264(&[0x65, 1, 2]));
        assert!(!h264(&[0x41, 1, 2]));
        assert!(h264(&[0x7c, 0x85, 1])); // FU-A start of IDR
        assert!(!h264(&[0x7c, 0x05, 1])); // FU-A continuation
        assert!(h264(&[0x78, 0, 2, 0x67, 0x42, 0, 1, 0x68])); // STAP-A with SPS
        assert!(!h264(&[0x78, 0, 0, 0x67])); // zero-sized NAL
        assert!(!h264(&[0x78, 0xff, 0xff]));
    }

    #[test]
    fn vp9_and_av1() {
        assert!(vp9(&[0x08]));
        assert!(!vp9(&[0x48]));
        assert!(vp9(&[0xa8, 0x05, 0x00])); // I, L, sid 0
        assert!(!vp9(&[0xa8, 0x05, 0x02])); // sid 1
        assert!(av1(&[0x08]));
        assert!(!av1(&[0x10]));
    }
}
