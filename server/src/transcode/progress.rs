//! ffmpeg's `-progress` output (sans-IO): `key=value` lines, a report ending at each
//! `progress=continue` (or `progress=end`). Lines are capped; unknown keys are ignored.

/// Longest line kept; a longer one is dropped whole (ffmpeg's are far shorter).
const MAX_LINE: usize = 256;

/// One progress report of the whole process (every output together).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Frames encoded by the first video output.
    pub frame: u64,
    /// Media time encoded per wall-clock time; below 1 the ladder cannot keep up.
    pub speed: Option<f64>,
    /// The last report: ffmpeg is ending.
    pub end: bool,
}

/// Splits the byte stream into lines and lines into reports.
#[derive(Debug, Default)]
pub struct ProgressParser {
    line: Vec<u8>,
    overlong: bool,
    current: Report,
}

impl ProgressParser {
    /// Feeds bytes; returns the reports they completed.
    pub fn feed(&mut self, data: &[u8]) -> Vec<Report> {
        let mut done = Vec::new();
        for &b in data {
            if b == b'\n' {
                if !self.overlong {
                    if let Some(r) = self.line_done() {
                        done.push(r);
                    }
                }
                self.line.clear();
                self.overlong = false;
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            } else {
                self.overlong = true;
            }
        }
        done
    }

    fn line_done(&mut self) -> Option<Report> {
        let line = std::str::from_utf8(&self.line).ok()?.trim();
        let (key, value) = line.split_once('=')?;
        let value = value.trim();
        match key {
            "frame" => self.current.frame = value.parse().unwrap_or(self.current.frame),
            // `speed=1.02x`, or `N/A` before the first frame.
            "speed" => self.current.speed = value.strip_suffix('x').and_then(|v| v.trim().parse().ok()),
            "progress" => {
                let mut r = std::mem::take(&mut self.current);
                r.end = value == "end";
                return Some(r);
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_end_at_progress_lines_split_anywhere() {
        let text = b"frame=54\nfps=0.00\nstream_0_0_q=11.0\nbitrate= 591.2kbits/s\nspeed=3.49x\nprogress=continue\n\
frame=60\nspeed=N/A\nprogress=end\n";
        for split in [1, 7, text.len()] {
            let mut p = ProgressParser::default();
            let mut reports = Vec::new();
            for chunk in text.chunks(split) {
                reports.extend(p.feed(chunk));
            }
            assert_eq!(
                reports,
                vec![
                    Report {
                        frame: 54,
                        speed: Some(3.49),
                        end: false
                    },
                    Report {
                        frame: 60,
                        speed: None,
                        end: true
                    },
                ],
                "split {split}"
            );
        }
    }

    #[test]
    fn overlong_and_junk_lines_are_ignored() {
        let mut p = ProgressParser::default();
        let mut junk = vec![b'x'; 10_000];
        junk.extend_from_slice(b"=1\n\xff\xfe=2\nframe=abc\nspeed= 0.5x\nprogress=continue\n");
        let r = p.feed(&junk);
        assert_eq!(
            r,
            vec![Report {
                frame: 0,
                speed: Some(0.5),
                end: false
            }]
        );
    }
}
