//! Counts TLS records in a device's byte stream, so a reset's loss is counted in messages.
//!
//! rumqttc flushes each MQTT packet on its own, and rustls seals each flush in its own
//! application-data record: one record device -> broker is one packet. Reads are not: a proxy
//! that falls behind reads several records at once, and a record can straddle two reads.

/// TLS record header: type (1), version (2), length (2).
const HEADER: usize = 5;
/// Record type of application data (TLS 1.2 and 1.3 after the handshake).
const APPLICATION_DATA: u8 = 23;

/// Where one direction's byte stream stands between records.
#[derive(Debug, Default)]
pub(super) struct Records {
    header: [u8; HEADER],
    /// Header bytes seen of the record being read (< HEADER while in the header).
    have: usize,
    /// Body bytes still to come of the current record.
    remaining: usize,
}

impl Records {
    /// Feeds the next bytes of the stream; returns how many application-data records end in
    /// them.
    pub(super) fn feed(&mut self, mut bytes: &[u8]) -> u64 {
        let mut ended = 0;
        while !bytes.is_empty() {
            if self.have < HEADER {
                let take = (HEADER - self.have).min(bytes.len());
                self.header[self.have..self.have + take].copy_from_slice(&bytes[..take]);
                self.have += take;
                bytes = &bytes[take..];
                if self.have < HEADER {
                    break;
                }
                self.remaining = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
            }
            let take = self.remaining.min(bytes.len());
            self.remaining -= take;
            bytes = &bytes[take..];
            if self.remaining == 0 {
                ended += u64::from(self.header[0] == APPLICATION_DATA);
                self.have = 0;
            }
        }
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u8, body: usize) -> Vec<u8> {
        let mut r = vec![kind, 3, 3];
        r.extend_from_slice(&(body as u16).to_be_bytes());
        r.extend(std::iter::repeat_n(0xAB, body));
        r
    }

    #[test]
    fn records_are_counted_across_any_split_of_the_stream() {
        // A handshake record, then three application-data records (one empty).
        let stream: Vec<u8> = [
            record(22, 40),
            record(23, 10),
            record(23, 0),
            record(23, 300),
        ]
        .concat();
        for cut in 0..=stream.len() {
            for cut2 in cut..=stream.len() {
                let mut r = Records::default();
                let parts = [&stream[..cut], &stream[cut..cut2], &stream[cut2..]];
                let counts: Vec<u64> = parts.iter().map(|p| r.feed(p)).collect();
                assert_eq!(counts.iter().sum::<u64>(), 3, "cuts {cut} {cut2}");
            }
        }
        let mut r = Records::default();
        assert_eq!(
            r.feed(&stream[..stream.len() - 1]),
            2,
            "the last one is not complete"
        );
        assert_eq!(r.feed(&stream[stream.len() - 1..]), 1);
    }
}
