//! gRPC's message framing of a request body, followed byte by byte so that a body that ends
//! without a whole message is the caller's bad input (INVALID_ARGUMENT) rather than tonic's
//! INTERNAL ("Missing request message.", "Unexpected EOF decoding stream."), which would count a
//! broken client as a server fault.
//!
//! A frame is a 1-byte compressed flag, a 4-byte big-endian length, then that many bytes.

const HEADER: usize = 5;

pub struct Framing {
    /// The largest message allowed, in bytes.
    max: usize,
    header: [u8; HEADER],
    /// Bytes of the current frame's header seen so far.
    header_seen: usize,
    /// Bytes of the current message still to come.
    message_left: usize,
    /// Frames whose header was seen.
    messages: usize,
}

impl Framing {
    pub fn new(max: usize) -> Self {
        Framing {
            max,
            header: [0; HEADER],
            header_seen: 0,
            message_left: 0,
            messages: 0,
        }
    }

    /// The largest message allowed, in bytes.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Takes the body's next bytes; `Err(declared length)` as soon as a message's header
    /// declares more than the limit, before its bytes arrive.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), usize> {
        while !data.is_empty() {
            if self.message_left > 0 {
                let n = self.message_left.min(data.len());
                self.message_left -= n;
                data = &data[n..];
                continue;
            }
            let n = (HEADER - self.header_seen).min(data.len());
            self.header[self.header_seen..self.header_seen + n].copy_from_slice(&data[..n]);
            self.header_seen += n;
            data = &data[n..];
            if self.header_seen == HEADER {
                let len = [
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ];
                let declared = u32::from_be_bytes(len) as usize;
                if declared > self.max {
                    return Err(declared);
                }
                self.message_left = declared;
                self.header_seen = 0;
                self.messages += 1;
            }
        }
        Ok(())
    }

    /// Why a body that ends here is not a request; `None` if it ends after a whole message.
    /// `may_be_empty`: the method streams requests, so no message at all is a valid request.
    pub fn incomplete(&self, may_be_empty: bool) -> Option<&'static str> {
        if self.header_seen > 0 || self.message_left > 0 {
            Some("request body ended inside a gRPC message")
        } else if self.messages == 0 && !may_be_empty {
            Some("request body has no gRPC message")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing(chunks: &[&[u8]]) -> Framing {
        let mut framing = Framing::new(100);
        for chunk in chunks {
            framing.feed(chunk).unwrap();
        }
        framing
    }

    fn framed(len: u32) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.resize(HEADER + len as usize, 7);
        bytes
    }

    #[test]
    fn messages_up_to_the_limit_pass_in_any_split() {
        let body: Vec<u8> = [framed(10), framed(0), framed(10)].concat();
        for chunk in 1..body.len() {
            let mut sizes = Framing::new(10);
            for piece in body.chunks(chunk) {
                assert_eq!(sizes.feed(piece), Ok(()), "chunks of {chunk}");
            }
        }
    }

    #[test]
    fn an_over_size_message_is_caught_by_its_header_even_split_and_after_others() {
        let mut body = framed(3);
        body.extend_from_slice(&[0, 0, 0x40, 0, 0]); // declares 4 MiB, sends nothing more
        for chunk in 1..body.len() {
            let mut sizes = Framing::new(10);
            let outcome = body
                .chunks(chunk)
                .map(|piece| sizes.feed(piece))
                .find(Result::is_err);
            assert_eq!(outcome, Some(Err(4 * 1024 * 1024)), "chunks of {chunk}");
        }
    }

    #[test]
    fn whole_messages_in_any_chunking_are_complete() {
        let body = [0, 0, 0, 0, 2, 0x0a, 0x00, 0, 0, 0, 0, 0];
        for split in 0..=body.len() {
            let (a, b) = body.split_at(split);
            assert_eq!(framing(&[a, b]).incomplete(false), None, "split at {split}");
        }
    }

    #[test]
    fn a_body_ending_inside_a_frame_or_without_one_is_incomplete() {
        assert!(framing(&[]).incomplete(false).is_some());
        assert_eq!(framing(&[]).incomplete(true), None);
        assert!(framing(&[&[0, 0, 0]]).incomplete(true).is_some());
        assert!(framing(&[&[0, 0, 0, 0, 5, 1]]).incomplete(true).is_some());
        assert!(framing(&[&[0, 0, 0, 0, 1, 1, 0]])
            .incomplete(true)
            .is_some());
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// However the body is cut into DATA frames, the verdict is the same.
            #[test]
            fn the_verdict_does_not_depend_on_chunking(
                body in proptest::collection::vec(any::<u8>(), 0..40),
                cuts in proptest::collection::vec(any::<usize>(), 0..6),
            ) {
                let mut whole = Framing::new(usize::MAX);
                whole.feed(&body).unwrap();
                let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (body.len() + 1)).collect();
                cuts.sort_unstable();
                let mut chunked = Framing::new(usize::MAX);
                let mut from = 0;
                for cut in cuts.into_iter().chain([body.len()]) {
                    chunked.feed(&body[from..cut]).unwrap();
                    from = cut;
                }
                prop_assert_eq!(chunked.incomplete(false), whole.incomplete(false));
                prop_assert_eq!(chunked.incomplete(true), whole.incomplete(true));
            }
        }
    }
}
