//! The SentencePiece model gemma.cpp embeds in a single-file `.sbs` (its `tokenizer` blob), rebuilt
//! from a GGUF's vocabulary and serialized with `prost`.
//!
//! The messages below declare only the fields of SentencePiece's `sentencepiece_model.proto` that
//! are set here (proto2, so every field is optional and a set field is written even when it holds
//! the default). Field numbers are SentencePiece's; unknown fields are simply absent.
//!
//! The mapping from GGUF token types: llama.cpp marks Hugging Face's "special" tokens as control
//! tokens, but SentencePiece only matches user-defined pieces inside text, and gemma.cpp encodes
//! its chat markers (`<start_of_turn>user\n`) from text. So apart from `<pad>`, `<eos>`, `<bos>`
//! (control) and `<unk>` (unknown), those become user-defined pieces, with literal spaces written
//! as U+2581 the way SentencePiece escapes them before matching.

use prost::Message;

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ModelProto {
    #[prost(message, repeated, tag = "1")]
    pub pieces: Vec<SentencePiece>,
    #[prost(message, optional, tag = "2")]
    pub trainer_spec: Option<TrainerSpec>,
    #[prost(message, optional, tag = "3")]
    pub normalizer_spec: Option<NormalizerSpec>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct SentencePiece {
    #[prost(string, optional, tag = "1")]
    pub piece: Option<String>,
    #[prost(float, optional, tag = "2")]
    pub score: Option<f32>,
    #[prost(enumeration = "PieceType", optional, tag = "3")]
    pub r#type: Option<i32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum PieceType {
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

/// `TrainerSpec.ModelType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ModelType {
    Unigram = 1,
    Bpe = 2,
    Word = 3,
    Char = 4,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct TrainerSpec {
    #[prost(enumeration = "ModelType", optional, tag = "3")]
    pub model_type: Option<i32>,
    #[prost(int32, optional, tag = "4")]
    pub vocab_size: Option<i32>,
    #[prost(bool, optional, tag = "25")]
    pub split_digits: Option<bool>,
    #[prost(bool, optional, tag = "26")]
    pub allow_whitespace_only_pieces: Option<bool>,
    #[prost(bool, optional, tag = "35")]
    pub byte_fallback: Option<bool>,
    #[prost(int32, optional, tag = "40")]
    pub unk_id: Option<i32>,
    #[prost(int32, optional, tag = "41")]
    pub bos_id: Option<i32>,
    #[prost(int32, optional, tag = "42")]
    pub eos_id: Option<i32>,
    #[prost(int32, optional, tag = "43")]
    pub pad_id: Option<i32>,
    #[prost(string, optional, tag = "45")]
    pub unk_piece: Option<String>,
    #[prost(string, optional, tag = "46")]
    pub bos_piece: Option<String>,
    #[prost(string, optional, tag = "47")]
    pub eos_piece: Option<String>,
    #[prost(string, optional, tag = "48")]
    pub pad_piece: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct NormalizerSpec {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(bool, optional, tag = "3")]
    pub add_dummy_prefix: Option<bool>,
    #[prost(bool, optional, tag = "4")]
    pub remove_extra_whitespaces: Option<bool>,
    #[prost(bool, optional, tag = "5")]
    pub escape_whitespaces: Option<bool>,
}

/// A GGUF vocabulary: pieces, scores and llama.cpp token types (1 normal, 2 unknown, 3 control,
/// 4 user-defined, 5 unused, 6 byte), with the special ids.
pub(crate) struct Vocabulary {
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub types: Vec<i32>,
    pub bos: u32,
    pub eos: u32,
    pub unk: u32,
    pub pad: u32,
    pub add_space_prefix: bool,
}

/// The serialized SentencePiece BPE model for `vocab`.
pub(crate) fn serialize(vocab: &Vocabulary) -> Vec<u8> {
    let special = [vocab.bos, vocab.eos, vocab.pad];
    let pieces = vocab
        .tokens
        .iter()
        .enumerate()
        .map(|(i, piece)| {
            let i = i as u32;
            let t = vocab.types.get(i as usize).copied().unwrap_or(1);
            let (kind, piece) = if i == vocab.unk {
                (PieceType::Unknown, piece.clone())
            } else if special.contains(&i) {
                (PieceType::Control, piece.clone())
            } else {
                match t {
                    1 => (PieceType::Normal, piece.clone()),
                    6 => (PieceType::Byte, piece.clone()),
                    5 => (PieceType::Unused, piece.clone()),
                    _ => (PieceType::UserDefined, piece.replace(' ', "\u{2581}")),
                }
            };
            SentencePiece {
                piece: Some(piece),
                score: Some(vocab.scores.get(i as usize).copied().unwrap_or(0.0)),
                r#type: Some(kind as i32),
            }
        })
        .collect();
    let name = |id: u32| vocab.tokens.get(id as usize).cloned().unwrap_or_default();
    let model = ModelProto {
        pieces,
        trainer_spec: Some(TrainerSpec {
            model_type: Some(ModelType::Bpe as i32),
            vocab_size: Some(vocab.tokens.len() as i32),
            split_digits: Some(true),
            allow_whitespace_only_pieces: Some(true),
            byte_fallback: Some(true),
            unk_id: Some(vocab.unk as i32),
            bos_id: Some(vocab.bos as i32),
            eos_id: Some(vocab.eos as i32),
            pad_id: Some(vocab.pad as i32),
            unk_piece: Some(name(vocab.unk)),
            bos_piece: Some(name(vocab.bos)),
            eos_piece: Some(name(vocab.eos)),
            pad_piece: Some(name(vocab.pad)),
        }),
        normalizer_spec: Some(NormalizerSpec {
            name: Some("identity".into()),
            add_dummy_prefix: Some(vocab.add_space_prefix),
            remove_extra_whitespaces: Some(false),
            escape_whitespaces: Some(true),
        }),
    };
    model.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_keep_their_kinds_and_decode_back() {
        let vocab = Vocabulary {
            tokens: [
                "<pad>",
                "<eos>",
                "<bos>",
                "<unk>",
                "▁the",
                "<start_of_turn>",
                "  ",
                "<0x0A>",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            scores: vec![0.0, 0.0, 0.0, 0.0, -1.5, 0.0, 0.0, 0.0],
            types: vec![3, 3, 3, 2, 1, 3, 4, 6],
            bos: 2,
            eos: 1,
            unk: 3,
            pad: 0,
            add_space_prefix: false,
        };
        let bytes = serialize(&vocab);
        let back = ModelProto::decode(bytes.as_slice()).unwrap();
        let kinds: Vec<i32> = back.pieces.iter().map(|p| p.r#type.unwrap()).collect();
        assert_eq!(kinds, vec![3, 3, 3, 2, 1, 4, 4, 6]);
        assert_eq!(back.pieces[6].piece.as_deref(), Some("\u{2581}\u{2581}"));
        assert_eq!(back.pieces[4].score, Some(-1.5));
        let spec = back.trainer_spec.unwrap();
        assert_eq!(
            (spec.bos_id, spec.eos_id, spec.vocab_size),
            (Some(2), Some(1), Some(8))
        );
        assert_eq!(spec.bos_piece.as_deref(), Some("<bos>"));
        // The first bytes: field 1 (pieces), length-delimited.
        assert_eq!(bytes[0], 0x0a);
    }
}
