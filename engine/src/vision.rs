//! Images in prompts, through llama.cpp's multimodal library (mtmd) and a vision projector GGUF
//! loaded beside the model (`--mmproj`).
//!
//! An image becomes a *span* of the prompt: mtmd's tokens for it (for Gemma 3 `<start_of_image>`,
//! one position per image embedding, `<end_of_image>`). The scheduler keeps prompts as plain
//! token lists, so the embedding positions hold placeholder ids made from the image's SHA-256:
//! never a real token (they are negative), equal for the same image and different for another.
//! That keeps a session's prefix reuse working across turns with images (the next turn's
//! prompt starts with the same ids, so the image's cached positions are kept instead of being
//! encoded again); the scheduler also checks the full hash of every reused image, so a chance
//! collision of placeholders cannot reuse the wrong picture.
//!
//! Pixels come from the `image-input` crate (the same formats and size caps as gemmactl's, and
//! WebP, which llama.cpp's own loader lacks); mtmd only resizes and encodes them.

use std::ffi::CString;
use std::path::Path;

use base64::Engine as _;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::mtmd::{
    mtmd_default_marker, MtmdBitmap, MtmdContext, MtmdContextParams, MtmdInputChunkType,
    MtmdInputChunks, MtmdInputText,
};
use llama_cpp_2::token::LlamaToken;

use crate::llama_log;
use crate::loader::{preflight, LoadError, BATCH_TOKENS};
use engine_protocol::{ErrorCode, ImageSource, VisionFacts};

pub(crate) struct Vision {
    ctx: MtmdContext,
    pub facts: VisionFacts,
}

/// An image made ready for a prompt: its tokens and what evaluates them.
pub(crate) struct PreparedImage {
    /// The span's token ids: real ids for the markers around the image, placeholders for its
    /// embeddings.
    pub tokens: Vec<LlamaToken>,
    /// SHA-256 of the image file's bytes, hex.
    pub hash: String,
    /// mtmd's chunks for the span, evaluated when the prompt reaches it.
    pub chunks: MtmdInputChunks,
}

/// Why an image of a request cannot be used: the protocol's code and one sentence.
pub(crate) struct ImageFault {
    pub code: ErrorCode,
    pub message: String,
}

impl From<String> for ImageFault {
    fn from(message: String) -> Self {
        ImageFault {
            code: ErrorCode::BadRequest,
            message,
        }
    }
}

fn bad_image(message: String) -> ImageFault {
    ImageFault {
        code: ErrorCode::BadImage,
        message,
    }
}

impl Vision {
    /// Loads the projector at `path` for `model`. A file that is no projector, or one made for
    /// a model of another embedding width, is refused before mtmd sees it (mtmd would only log
    /// a line and return nothing).
    pub(crate) fn load(
        model: &LlamaModel,
        path: &Path,
        threads: u32,
        use_gpu: bool,
    ) -> Result<Vision, LoadError> {
        let shown = path.display().to_string();
        let info = preflight(path).map_err(|e| match e.code {
            ErrorCode::ModelNotFound => LoadError {
                code: e.code,
                message: format!(
                    "vision projector {shown} does not exist: check the --mmproj path"
                ),
            },
            _ => e,
        })?;
        let failed = |message: String| LoadError {
            code: ErrorCode::LoadFailed,
            message,
        };
        let Some(projector) = info.projector else {
            let arch = info.architecture.as_deref().unwrap_or("none");
            return Err(failed(format!(
                "{shown} is not a vision projector (its GGUF architecture is '{arch}', a projector's is 'clip'): give --mmproj the projector file made for this model (often named mmproj-*.gguf)"
            )));
        };
        let model_width = model.n_embd().max(0) as u64;
        if let Some(width) = projector.projection_dim.filter(|w| *w != model_width) {
            return Err(failed(format!(
                "{shown} is a projector for a model with {width}-wide embeddings, but this model's are {model_width}: use the projector made for this model"
            )));
        }
        let Some(path_text) = path.to_str() else {
            return Err(failed(format!(
                "{shown}: the projector's path is not valid UTF-8: rename or move the file"
            )));
        };
        llama_log::install_mtmd();
        let params = MtmdContextParams {
            use_gpu,
            print_timings: false,
            n_threads: threads as i32,
            media_marker: CString::new(mtmd_default_marker()).unwrap_or_default(),
            image_min_tokens: -1,
            image_max_tokens: -1,
        };
        let mark = llama_log::mark();
        let ctx = MtmdContext::init_from_file(path_text, model, &params).map_err(|_| {
            let why = llama_log::complaint_since(mark).unwrap_or_else(|| "no reason given".into());
            failed(format!(
                "llama.cpp could not load the vision projector {shown}: {why}; use the projector made for this model, or download it again"
            ))
        })?;
        if !ctx.support_vision() {
            return Err(failed(format!(
                "{shown} has no vision encoder (an audio-only projector?): give --mmproj a vision projector"
            )));
        }
        if ctx.decode_use_mrope() {
            return Err(failed(format!(
                "{shown} uses M-RoPE image positions, which gemma-engine does not support: use a Gemma vision projector"
            )));
        }
        let image_size = projector.image_size.unwrap_or(0) as u32;
        let mut vision = Vision {
            ctx,
            facts: VisionFacts {
                path: shown.clone(),
                projector_type: projector.projector_type.clone(),
                image_size,
                tokens_per_image: 0,
                embedding_length: model_width as u32,
            },
        };
        // What one image costs in the context, measured rather than computed: mtmd's tokens for
        // a blank image of the encoder's size.
        let side = image_size.max(1);
        let blank = vec![0u8; side as usize * side as usize * 3];
        let measured = MtmdBitmap::from_image_data(side, side, &blank)
            .ok()
            .and_then(|b| vision.tokenize(&b).ok())
            .map(|c| c.total_tokens());
        match measured {
            Some(n) if n > 0 => vision.facts.tokens_per_image = n as u32,
            _ => {
                return Err(failed(format!(
                    "{shown} loaded, but llama.cpp could not turn a test image into tokens with it: use the projector made for this model"
                )))
            }
        }
        Ok(vision)
    }

    fn tokenize(
        &self,
        bitmap: &MtmdBitmap,
    ) -> Result<MtmdInputChunks, llama_cpp_2::mtmd::MtmdTokenizeError> {
        let text = MtmdInputText {
            text: mtmd_default_marker().to_string(),
            // No BOS here: the span sits inside a prompt. The marker itself is special.
            add_special: false,
            parse_special: true,
        };
        self.ctx.tokenize(text, &[bitmap])
    }

    /// Reads, decodes and tokenizes image `index` (0-based, in the request's order).
    pub(crate) fn prepare(
        &self,
        source: &ImageSource,
        index: usize,
    ) -> Result<PreparedImage, ImageFault> {
        let (bytes, name) = read(source, index)?;
        let rgb = image_input::decode_rgb(&bytes).map_err(|e| bad_image(format!("{name} {e}")))?;
        let hash = image_input::sha256_hex(&bytes);
        drop(bytes);
        let mut bitmap =
            MtmdBitmap::from_image_data(rgb.width, rgb.height, &rgb.pixels).map_err(|e| {
                bad_image(format!(
                    "{name} could not be handed to llama.cpp ({e}): convert it to PNG"
                ))
            })?;
        // mtmd keys its own caches by this id.
        let _ = bitmap.set_id(&hash);
        drop(rgb);
        let chunks = self.tokenize(&bitmap).map_err(|e| {
            bad_image(format!(
                "{name} could not be prepared for the vision encoder ({e}): convert it to PNG"
            ))
        })?;
        let seed = u64::from_str_radix(&hash[..15], 16).unwrap_or(0);
        let mut tokens = Vec::with_capacity(chunks.total_tokens());
        for i in 0..chunks.len() {
            let Some(chunk) = chunks.get(i) else { continue };
            match chunk.chunk_type() {
                MtmdInputChunkType::Text => {
                    tokens.extend_from_slice(chunk.text_tokens().unwrap_or_default())
                }
                _ => {
                    let n = chunk.n_tokens();
                    tokens.extend((0..n).map(|k| placeholder(seed, k)));
                }
            }
        }
        Ok(PreparedImage {
            tokens,
            hash,
            chunks,
        })
    }

    /// Encodes the image of `chunks` and decodes the span into sequence `seq` from position
    /// `at`. Blocks until done (milliseconds for the test projector, about a second per image
    /// for Gemma 3's 400M-parameter encoder on a CPU).
    pub(crate) fn eval(
        &mut self,
        chunks: &MtmdInputChunks,
        ctx: &mut LlamaContext,
        seq: i32,
        at: usize,
    ) -> Result<(), String> {
        chunks
            .eval_chunks(
                &mut self.ctx,
                ctx,
                at as i32,
                seq,
                BATCH_TOKENS as i32,
                false,
            )
            .map(|_| ())
            .map_err(|e| {
                let why = llama_log::last_complaint().unwrap_or_else(|| e.to_string());
                format!("llama.cpp could not encode or decode an image ({why})")
            })
    }
}

/// The placeholder id of position `k` of an image whose hash starts with `seed`: negative, so
/// never a vocabulary token.
fn placeholder(seed: u64, k: usize) -> LlamaToken {
    let range = i32::MAX as u64;
    LlamaToken(-1 - (seed.wrapping_add(k as u64) % range) as i32)
}

/// Whether `token` stands for an image embedding.
pub(crate) fn is_placeholder(token: LlamaToken) -> bool {
    token.0 < 0
}

/// The image's bytes and a name for it in sentences.
fn read(source: &ImageSource, index: usize) -> Result<(Vec<u8>, String), ImageFault> {
    let max = image_input::MAX_FILE_BYTES;
    match source {
        ImageSource::Path { path } => {
            let p = Path::new(path);
            if !p.is_absolute() {
                return Err(bad_image(format!(
                    "image path {path:?} is relative: send an absolute path (the engine's working folder is not the caller's)"
                )));
            }
            let meta = std::fs::metadata(p).map_err(|e| {
                bad_image(match e.kind() {
                    std::io::ErrorKind::NotFound => {
                        format!("{path} does not exist: check the image's path")
                    }
                    _ => format!("{path} cannot be read ({e}): check its permissions"),
                })
            })?;
            if meta.is_dir() {
                return Err(bad_image(format!("{path} is a folder: give an image file")));
            }
            if meta.len() > max {
                let e = image_input::ImageError::FileTooLarge(meta.len());
                return Err(bad_image(format!("{path} {e}")));
            }
            let bytes = std::fs::read(p).map_err(|e| {
                bad_image(format!(
                    "{path} cannot be read ({e}): check its permissions"
                ))
            })?;
            Ok((bytes, path.clone()))
        }
        ImageSource::Data { data } => {
            let name = format!("image {} of the request", index + 1);
            // Four base64 characters carry three bytes: refuse an oversized image before
            // decoding it.
            if data.len() as u64 / 4 * 3 > max + 3 {
                let e = image_input::ImageError::FileTooLarge(data.len() as u64 / 4 * 3);
                return Err(bad_image(format!("{name} {e}")));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|e| {
                    bad_image(format!(
                        "{name} is not valid base64 ({e}): send the file's bytes in standard base64 with padding"
                    ))
                })?;
            Ok((bytes, name))
        }
    }
}
