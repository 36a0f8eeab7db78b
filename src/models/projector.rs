//! Vision projectors: the second GGUF (`mmproj`) that lets a gemma-engine model see images.
//!
//! A projector is checked against its model before it is registered or launched, from both
//! files' headers: it must be a projector (GGUF architecture `clip`) and must write embeddings
//! as wide as the model's, else llama.cpp would refuse it only inside the engine.

use std::path::Path;

use anyhow::{bail, Result};
use gguf::{GgufError, GgufInfo, Projector};
use serde_json::{json, Value};

/// A projector file that fits its model.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The projector file's header.
    pub info: GgufInfo,
    /// Its vision facts.
    pub projector: Projector,
}

/// Reads the projector at `path` and checks it against the model whose header is `model`.
pub fn check(path: &Path, model: &GgufInfo, model_path: &Path) -> Result<Checked> {
    let info = inspect(path)?;
    let projector = fits(path, &info, model, model_path)?;
    Ok(Checked { info, projector })
}

/// The projector file's header; a missing file is named as the projector it should be.
pub fn inspect(path: &Path) -> Result<GgufInfo> {
    match gguf::inspect(path) {
        Ok(info) => Ok(info),
        Err(GgufError::Missing { .. }) => bail!(
            "vision projector {} does not exist: check the --mmproj path",
            path.display()
        ),
        Err(e) => Err(e.into()),
    }
}

/// The projector's facts if `info` is a projector whose embeddings fit `model`'s.
fn fits(path: &Path, info: &GgufInfo, model: &GgufInfo, model_path: &Path) -> Result<Projector> {
    let Some(projector) = info.projector.clone() else {
        bail!(
            "{} is not a vision projector (its GGUF architecture is '{}', a projector's is 'clip'): give --mmproj the projector file made for this model (often named mmproj-*.gguf)",
            path.display(),
            info.architecture.as_deref().unwrap_or("none")
        );
    };
    if let (Some(width), Some(model_width)) = (projector.projection_dim, model.embedding_length) {
        if width != model_width {
            bail!(
                "{} is a projector for a model with {width}-wide embeddings, but {} has {model_width}-wide ones: use the projector made for this model",
                path.display(),
                model_path.display()
            );
        }
    }
    Ok(projector)
}

/// One line about a projector: type, image size, tokens per image, encoder size.
pub fn describe(p: &Projector) -> String {
    let ty = p.projector_type.as_deref().unwrap_or("unknown type");
    let size = p
        .image_size
        .map(|s| format!("{s}×{s}-pixel images"))
        .unwrap_or_else(|| "image size unknown".into());
    let tokens = p
        .tokens_per_image()
        .map(|t| format!("{t} tokens per image"))
        .unwrap_or_else(|| "tokens per image set by the image".into());
    let encoder = match (p.block_count, p.embedding_length) {
        (Some(l), Some(w)) => format!(", encoder {l} layers × {w}"),
        _ => String::new(),
    };
    format!("{ty}, {size}, {tokens}{encoder}")
}

/// The projector as a JSON object, for `--json` outputs.
pub fn to_json(path: &Path, checked: &Checked) -> Value {
    let p = &checked.projector;
    json!({
        "path": path.display().to_string(),
        "architecture": checked.info.architecture,
        "projector_type": p.projector_type,
        "image_size": p.image_size,
        "patch_size": p.patch_size,
        "tokens_per_image": p.tokens_per_image(),
        "embedding_length": p.projection_dim,
        "encoder_layers": p.block_count,
        "size_bytes": checked.info.file_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(width: u64) -> GgufInfo {
        GgufInfo {
            architecture: Some("gemma3".into()),
            embedding_length: Some(width),
            ..GgufInfo::blank(1)
        }
    }

    fn gemma3_projector(width: u64) -> GgufInfo {
        GgufInfo {
            architecture: Some("clip".into()),
            projector: Some(Projector {
                projector_type: Some("gemma3".into()),
                image_size: Some(896),
                patch_size: Some(14),
                projection_dim: Some(width),
                ..Projector::default()
            }),
            ..GgufInfo::blank(1)
        }
    }

    #[test]
    fn a_fitting_projector_passes_and_says_its_tokens_per_image() {
        let p = fits(
            Path::new("/p.gguf"),
            &gemma3_projector(2560),
            &model(2560),
            Path::new("/m.gguf"),
        )
        .unwrap();
        // Gemma 3: 896 / 14 = 64 patches a side, pooled by 4 to 16: 256, and the two markers.
        assert_eq!(p.tokens_per_image(), Some(258));
        assert_eq!(
            describe(&p),
            "gemma3, 896×896-pixel images, 258 tokens per image"
        );
    }

    #[test]
    fn a_wrong_width_or_a_model_file_is_refused_in_one_sentence() {
        let e = fits(
            Path::new("/p.gguf"),
            &gemma3_projector(512),
            &model(640),
            Path::new("/m.gguf"),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "/p.gguf is a projector for a model with 512-wide embeddings, but /m.gguf has 640-wide ones: use the projector made for this model");
        let e = fits(
            Path::new("/m2.gguf"),
            &model(640),
            &model(640),
            Path::new("/m.gguf"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("/m2.gguf is not a vision projector (its GGUF architecture is 'gemma3'"),
            "{e}"
        );
    }
}
