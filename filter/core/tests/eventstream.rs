//! The incremental decoder against frames written by AWS's `aws-smithy-eventstream`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // a test stops where it fails

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use aws_smithy_types::DateTime;
use bedrock_gateway_core::bedrock::eventstream::{DecodeError, Decoder};

#[derive(Debug, PartialEq)]
struct Decoded {
    message_type: Option<String>,
    event_type: Option<String>,
    exception_type: Option<String>,
    payload: Vec<u8>,
}

fn aws_frame(event_type: &str, payload: &str, extra_headers: Vec<Header>) -> Vec<u8> {
    let mut message = Message::new(payload.as_bytes().to_vec());
    for header in extra_headers {
        message = message.add_header(header);
    }
    message = message
        .add_header(Header::new(
            ":event-type",
            HeaderValue::String(event_type.to_owned().into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("event".into()),
        ));
    let mut out = Vec::new();
    write_message_to(&message, &mut out).unwrap();
    out
}

fn every_header_type() -> Vec<Header> {
    vec![
        Header::new("t-bool", HeaderValue::Bool(true)),
        Header::new("f-bool", HeaderValue::Bool(false)),
        Header::new("byte", HeaderValue::Byte(-3)),
        Header::new("int16", HeaderValue::Int16(-300)),
        Header::new("int32", HeaderValue::Int32(70_000)),
        Header::new("int64", HeaderValue::Int64(-5_000_000_000)),
        Header::new("bytes", HeaderValue::ByteArray(vec![0, 1, 2, 255].into())),
        Header::new(
            "timestamp",
            HeaderValue::Timestamp(DateTime::from_secs(1_700_000_000)),
        ),
        Header::new(
            "uuid",
            HeaderValue::Uuid(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
        ),
    ]
}

fn stream() -> (Vec<u8>, Vec<Decoded>) {
    let events = [
        (
            "messageStart",
            r#"{"role":"assistant","p":"abc"}"#.to_owned(),
            vec![],
        ),
        (
            "contentBlockDelta",
            r#"{"contentBlockIndex":0,"delta":{"text":"Hello ✓"}}"#.to_owned(),
            every_header_type(),
        ),
        (
            "contentBlockDelta",
            format!(r#"{{"delta":{{"text":"{}"}}}}"#, "x".repeat(5000)),
            vec![],
        ),
        (
            "messageStop",
            r#"{"stopReason":"end_turn"}"#.to_owned(),
            vec![],
        ),
        ("metadata", String::new(), vec![]),
    ];
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    for (event_type, payload, headers) in events {
        bytes.extend(aws_frame(event_type, &payload, headers));
        expected.push(Decoded {
            message_type: Some("event".into()),
            event_type: Some(event_type.into()),
            exception_type: None,
            payload: payload.into_bytes(),
        });
    }
    (bytes, expected)
}

fn decode_in_chunks(bytes: &[u8], cuts: &[usize]) -> Result<Vec<Decoded>, DecodeError> {
    let mut decoder = Decoder::default();
    let mut decoded = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
        decoder.decode(&bytes[start..cut], &mut |frame| {
            decoded.push(Decoded {
                message_type: frame.headers.message_type.map(str::to_owned),
                event_type: frame.headers.event_type.map(str::to_owned),
                exception_type: frame.headers.exception_type.map(str::to_owned),
                payload: frame.payload.to_vec(),
            })
        })?;
        start = cut;
    }
    assert_eq!(
        decoder.pending_len(),
        0,
        "a complete stream leaves nothing pending"
    );
    Ok(decoded)
}

#[test]
fn decodes_a_whole_stream_in_one_chunk() {
    let (bytes, expected) = stream();
    assert_eq!(decode_in_chunks(&bytes, &[]).unwrap(), expected);
}

#[test]
fn decodes_frames_split_at_every_byte() {
    let (bytes, expected) = stream();
    for cut in 0..=bytes.len() {
        assert_eq!(
            decode_in_chunks(&bytes, &[cut]).unwrap(),
            expected,
            "split at {cut}"
        );
    }
}

#[test]
fn decodes_one_byte_at_a_time_and_in_uneven_chunks() {
    let (bytes, expected) = stream();
    let every_byte: Vec<usize> = (1..bytes.len()).collect();
    assert_eq!(decode_in_chunks(&bytes, &every_byte).unwrap(), expected);
    let uneven: Vec<usize> = (1..bytes.len())
        .filter(|i| i % 7 == 0 || i % 13 == 0)
        .collect();
    assert_eq!(decode_in_chunks(&bytes, &uneven).unwrap(), expected);
}

#[test]
fn reads_exception_frames() {
    let message = Message::new(br#"{"message":"slow down"}"#.to_vec())
        .add_header(Header::new(
            ":exception-type",
            HeaderValue::String("throttlingException".into()),
        ))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("exception".into()),
        ));
    let mut bytes = Vec::new();
    write_message_to(&message, &mut bytes).unwrap();
    let decoded = decode_in_chunks(&bytes, &[3, 20]).unwrap();
    assert_eq!(decoded.len(), 1);
    assert_eq!(decoded[0].message_type.as_deref(), Some("exception"));
    assert_eq!(
        decoded[0].exception_type.as_deref(),
        Some("throttlingException")
    );
}

#[test]
fn rejects_a_corrupt_message_crc_wherever_the_stream_is_split() {
    let (mut bytes, _) = stream();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    for cut in [0, 1, 5, 100, last] {
        assert_eq!(
            decode_in_chunks(&bytes, &[cut]),
            Err(DecodeError::MessageCrcMismatch),
            "split at {cut}"
        );
    }
}

#[test]
fn rejects_a_corrupt_prelude_crc() {
    let (mut bytes, _) = stream();
    bytes[9] ^= 0x80;
    assert_eq!(
        decode_in_chunks(&bytes, &[]),
        Err(DecodeError::PreludeCrcMismatch)
    );
}

#[test]
fn enforces_the_frame_size_limit_before_buffering() {
    let frame = aws_frame("contentBlockDelta", &"y".repeat(2000), vec![]);
    let mut decoder = Decoder::new(1024);
    // Only the first 4 bytes are needed to refuse it: nothing is buffered.
    let result = decoder.decode(&frame[..4], &mut |_| panic!("no frame expected"));
    assert_eq!(
        result,
        Err(DecodeError::FrameTooLong {
            length: frame.len(),
            max: 1024
        })
    );
}

#[test]
fn rejects_impossible_lengths() {
    let mut decoder = Decoder::default();
    let result = decoder.decode(&[0, 0, 0, 3, 0, 0, 0, 0], &mut |_| {
        panic!("no frame expected")
    });
    assert_eq!(result, Err(DecodeError::FrameTooShort(3)));
    // Headers longer than the frame.
    let mut frame = aws_frame("x", "{}", vec![]);
    frame[4..8].copy_from_slice(&1000u32.to_be_bytes());
    let prelude_crc = crc32fast::hash(&frame[..8]);
    frame[8..12].copy_from_slice(&prelude_crc.to_be_bytes());
    let len = frame.len();
    let message_crc = crc32fast::hash(&frame[..len - 4]);
    frame[len - 4..].copy_from_slice(&message_crc.to_be_bytes());
    assert!(matches!(
        Decoder::default().decode(&frame, &mut |_| {}),
        Err(DecodeError::MalformedHeaders(_))
    ));
}

#[test]
fn own_encoder_round_trips_through_the_aws_decoder() {
    use aws_smithy_eventstream::frame::read_message_from;
    let frame = bedrock_gateway_core::bedrock::eventstream::encode_frame(
        &[(":event-type", "chunk"), (":message-type", "event")],
        br#"{"bytes":"e30="}"#,
    );
    let message = read_message_from(&frame[..]).unwrap();
    assert_eq!(message.payload().as_ref(), br#"{"bytes":"e30="}"#);
    assert_eq!(message.headers().len(), 2);
}
