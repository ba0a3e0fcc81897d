//! Checkpoint import and export: safetensors, PyTorch zip `.pth`/`.pth.tar` (torch >= 1.6)
//! and the legacy non-zip torch format (torch < 1.6, e.g. AVID's AudioSet release).
//!
//! The state dict is taken from a top-level `model`, `state_dict` or `model_av` entry
//! when present, else from the top level. Keys keep their PyTorch names; use
//! [`strip_prefix`] with the prefix constants below to reach a sub-network, and
//! [`load_into`] to copy them into a model's `VarMap` with a report of missing,
//! unexpected and misshaped keys.
//!
//! Pickle opcodes are parsed by `candle_core::pickle::Stack`; the legacy container
//! (magic, protocol, sys-info, object, storage keys, raw storages) is walked here.
//! Caveat: candle's pickle parser overflows (a panic in debug builds only) on integers
//! wider than 8 bytes; torch writes one such integer, the legacy magic number, and it is
//! checked here byte by byte before candle sees the stream.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::pickle::{Object, Stack};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

use crate::error::{ModelError, Result};

/// AVID checkpoints: video backbone keys inside `model`.
pub const AVID_VIDEO_PREFIX: &str = "module.video_model.";
/// AVID checkpoints: audio backbone keys inside `model`.
pub const AVID_AUDIO_PREFIX: &str = "module.audio_model.";
/// RepLAI checkpoints: video backbone keys inside `model`.
pub const REPLAI_VIDEO_PREFIX: &str = "module.backbone.video.";
/// RepLAI checkpoints: audio backbone keys inside `model`.
pub const REPLAI_AUDIO_PREFIX: &str = "module.backbone.audio.";
/// RepLAI checkpoints: projection heads (`module.mlp.<head>.{0,2}.*`); strip it to load
/// [`crate::ReplaiHeads`] built at the root, or strip `module.` to keep the `mlp.` prefix.
pub const REPLAI_HEADS_PREFIX: &str = "module.mlp.";
/// A bare DataParallel/DDP wrapper (torchvision models trained with DDP).
pub const DDP_PREFIX: &str = "module.";

/// Top-level entries searched (in order) for a nested state dict.
pub const NESTED_KEYS: [&str; 3] = ["model", "state_dict", "model_av"];

/// On-disk format of a checkpoint, found by sniffing its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Hugging Face safetensors.
    Safetensors,
    /// torch >= 1.6 zip archive with `data.pkl` and `data/<key>` storages.
    TorchZip,
    /// torch < 1.6 (or `_use_new_zipfile_serialization=False`) pickle stream.
    TorchLegacy,
}

/// A loaded state dict plus where it came from.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Detected file format.
    pub format: Format,
    /// The top-level key the state dict was nested under, if any.
    pub nested_key: Option<String>,
    /// Tensors by PyTorch name (CPU).
    pub tensors: HashMap<String, Tensor>,
}

const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// Detects the format of `path` from its first bytes.
pub fn sniff(path: &Path) -> Result<Format> {
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    let mut head = [0u8; 16];
    let n = read_up_to(&mut f, &mut head).map_err(io)?;
    let head = &head[..n];
    if head.starts_with(b"PK\x03\x04") {
        return Ok(Format::TorchZip);
    }
    if head.len() >= 15 && head[..4] == [0x80, 0x02, 0x8a, 0x0a] {
        if head[4..14] == LEGACY_MAGIC {
            return Ok(Format::TorchLegacy);
        }
        return Err(not_ckpt(path, "pickle stream without torch's magic number"));
    }
    if head.len() >= 9 {
        let mut n8 = [0u8; 8];
        n8.copy_from_slice(&head[..8]);
        let header_len = u64::from_le_bytes(n8);
        if header_len > 1 && header_len.saturating_add(8) <= len && head[8] == b'{' {
            return Ok(Format::Safetensors);
        }
    }
    Err(not_ckpt(
        path,
        "not safetensors, not a zip .pth and not a legacy torch pickle",
    ))
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let k = r.read(&mut buf[n..])?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n)
}

fn not_ckpt(path: &Path, reason: &str) -> ModelError {
    ModelError::NotACheckpoint {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn malformed(path: &Path, msg: impl Into<String>) -> ModelError {
    ModelError::Malformed {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Loads the state dict of any supported checkpoint (see the module docs).
pub fn load_tensors(path: impl AsRef<Path>) -> Result<HashMap<String, Tensor>> {
    Ok(load_checkpoint(path)?.tensors)
}

/// Like [`load_tensors`] but also reports the format and nesting key.
pub fn load_checkpoint(path: impl AsRef<Path>) -> Result<Checkpoint> {
    let path = path.as_ref();
    let format = sniff(path)?;
    match format {
        Format::Safetensors => {
            let tensors = candle_core::safetensors::load(path, &Device::Cpu)
                .map_err(|e| malformed(path, format!("safetensors: {e}")))?;
            Ok(Checkpoint {
                format,
                nested_key: None,
                tensors,
            })
        }
        Format::TorchZip => read_zip(path),
        Format::TorchLegacy => read_legacy(path),
    }
}

/// Where a tensor's bytes live and how to view them.
#[derive(Debug, Clone)]
struct TensorRef {
    storage_key: String,
    storage_class: String,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

fn as_usize(o: &Object) -> Option<usize> {
    match o {
        Object::Int(i) if *i >= 0 => Some(*i as usize),
        Object::Long(i) if *i >= 0 => usize::try_from(*i).ok(),
        _ => None,
    }
}

fn as_usize_tuple(o: &Object) -> Option<Vec<usize>> {
    match o {
        Object::Tuple(v) | Object::List(v) => v.iter().map(as_usize).collect(),
        _ => None,
    }
}

/// `(storage class, key, root numel, view offset)` of a persistent id
/// `('storage', torch.XStorage, key, location, numel[, view_metadata])`.
fn storage_of(o: &Object) -> Option<(String, String, usize)> {
    let Object::PersistentLoad(id) = o else {
        return None;
    };
    let Object::Tuple(t) = id.as_ref() else {
        return None;
    };
    if t.len() < 5 || t[0] != Object::Unicode("storage".into()) {
        return None;
    }
    let class = match &t[1] {
        Object::Class { class_name, .. } => class_name.clone(),
        _ => return None,
    };
    let key = match &t[2] {
        Object::Unicode(k) => k.clone(),
        _ => return None,
    };
    // Legacy view storages: view_metadata = (view_key, offset, view_size).
    let view_offset = match t.get(5) {
        Some(Object::Tuple(v)) if v.len() == 3 => as_usize(&v[1])?,
        _ => 0,
    };
    Some((class, key, view_offset))
}

/// Recognises `_rebuild_tensor_v2(storage, offset, size, stride, ...)` and its
/// `_rebuild_parameter` / `_rebuild_from_type_v2` wrappers.
fn tensor_ref(o: &Object) -> Option<TensorRef> {
    let Object::Reduce { callable, args } = o else {
        return None;
    };
    let Object::Class {
        module_name,
        class_name,
    } = callable.as_ref()
    else {
        return None;
    };
    let Object::Tuple(args) = args.as_ref() else {
        return None;
    };
    match (module_name.as_str(), class_name.as_str()) {
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
            let (storage_class, storage_key, view_offset) = storage_of(args.first()?)?;
            Some(TensorRef {
                storage_key,
                storage_class,
                offset: as_usize(args.get(1)?)? + view_offset,
                size: as_usize_tuple(args.get(2)?)?,
                stride: as_usize_tuple(args.get(3)?)?,
            })
        }
        ("torch._utils", "_rebuild_parameter")
        | ("torch._utils", "_rebuild_parameter_with_state") => tensor_ref(args.first()?),
        ("torch._tensor", "_rebuild_from_type_v2") => {
            let inner = Object::Reduce {
                callable: Box::new(args.first()?.clone()),
                args: Box::new(args.get(2)?.clone()),
            };
            tensor_ref(&inner)
        }
        _ => None,
    }
}

/// Candle dtype and element size of a torch storage class.
fn storage_dtype(class: &str) -> Option<(DType, usize)> {
    Some(match class {
        "FloatStorage" => (DType::F32, 4),
        "DoubleStorage" => (DType::F64, 8),
        "HalfStorage" => (DType::F16, 2),
        "BFloat16Storage" => (DType::BF16, 2),
        "LongStorage" => (DType::I64, 8),
        "IntStorage" => (DType::I32, 4),
        "ShortStorage" => (DType::I16, 2),
        "ByteStorage" | "BoolStorage" => (DType::U8, 1),
        _ => return None,
    })
}

/// Element size of any storage class, including ones candle cannot hold (to skip them).
fn storage_elem_size(class: &str) -> Option<usize> {
    storage_dtype(class).map(|(_, s)| s).or(match class {
        "CharStorage" | "QUInt8Storage" | "QInt8Storage" => Some(1),
        "ComplexFloatStorage" => Some(8),
        "ComplexDoubleStorage" => Some(16),
        "QInt32Storage" => Some(4),
        _ => None,
    })
}

/// The nesting key (if any) and the (name, tensor ref) entries of a state dict.
type SelectedDict = (Option<String>, Vec<(String, TensorRef)>);

/// Picks the state dict out of the unpickled top-level object: returns the nesting key
/// and the (name, tensor ref) pairs. Non-tensor entries (e.g. `_metadata`) are skipped.
fn select_state_dict(path: &Path, obj: &Object) -> Result<SelectedDict> {
    let Object::Dict(top) = obj else {
        return Err(malformed(path, "top-level object is not a dict"));
    };
    let tensors_of = |entries: &[(Object, Object)]| -> Vec<(String, TensorRef)> {
        entries
            .iter()
            .filter_map(|(k, v)| match k {
                Object::Unicode(name) => tensor_ref(v).map(|t| (name.clone(), t)),
                _ => None,
            })
            .collect()
    };
    for key in NESTED_KEYS {
        let nested = top.iter().find_map(|(k, v)| match (k, v) {
            (Object::Unicode(name), Object::Dict(d)) if name == key => Some(d),
            _ => None,
        });
        if let Some(d) = nested {
            let t = tensors_of(d);
            if !t.is_empty() {
                return Ok((Some(key.to_string()), t));
            }
        }
    }
    let t = tensors_of(top);
    if t.is_empty() {
        return Err(malformed(
            path,
            format!("no tensors at the top level nor under any of {NESTED_KEYS:?}"),
        ));
    }
    Ok((None, t))
}

/// Materialises one tensor from its storage bytes, honouring offset and strides.
fn build_tensor(path: &Path, name: &str, r: &TensorRef, bytes: &[u8]) -> Result<Tensor> {
    let (dtype, es) =
        storage_dtype(&r.storage_class).ok_or_else(|| ModelError::UnsupportedDtype {
            path: path.to_path_buf(),
            name: name.to_string(),
            storage: r.storage_class.clone(),
        })?;
    if r.size.len() != r.stride.len() {
        return Err(malformed(
            path,
            format!("tensor `{name}`: size/stride rank differ"),
        ));
    }
    let storage_numel = bytes.len() / es;
    let bad = || {
        malformed(
            path,
            format!(
                "tensor `{name}` (size {:?}, stride {:?}, offset {}) exceeds its storage of {storage_numel} elements",
                r.size, r.stride, r.offset
            ),
        )
    };
    let numel = r
        .size
        .iter()
        .try_fold(1usize, |acc, &s| acc.checked_mul(s))
        .ok_or_else(bad)?;
    if numel == 0 {
        return Ok(Tensor::zeros(r.size.as_slice(), dtype, &Device::Cpu)?);
    }
    // Largest element index touched, with overflow checks (sizes come from the file).
    let last = r
        .size
        .iter()
        .zip(&r.stride)
        .try_fold(r.offset, |acc, (&s, &st)| {
            (s - 1).checked_mul(st).and_then(|v| acc.checked_add(v))
        })
        .ok_or_else(bad)?;
    if last >= storage_numel {
        return Err(bad());
    }
    let mut contiguous = true;
    let mut expect = 1;
    for (s, st) in r.size.iter().zip(&r.stride).rev() {
        if *s != 1 && *st != expect {
            contiguous = false;
        }
        expect *= s;
    }
    let data: Vec<u8> = if contiguous {
        bytes[r.offset * es..(r.offset + numel) * es].to_vec()
    } else {
        let mut out = Vec::with_capacity(numel * es);
        let mut idx = vec![0usize; r.size.len()];
        for _ in 0..numel {
            let e = r.offset + idx.iter().zip(&r.stride).map(|(i, s)| i * s).sum::<usize>();
            out.extend_from_slice(&bytes[e * es..(e + 1) * es]);
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < r.size[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        out
    };
    Ok(Tensor::from_raw_buffer(
        &data,
        dtype,
        &r.size,
        &Device::Cpu,
    )?)
}

fn parse_pickle<R: BufRead>(path: &Path, r: &mut R, what: &str) -> Result<Object> {
    let mut stack = Stack::empty();
    stack
        .read_loop(r)
        .map_err(|e| malformed(path, format!("{what}: {e}")))?;
    stack
        .finalize()
        .map_err(|e| malformed(path, format!("{what}: {e}")))
}

fn read_zip(path: &Path) -> Result<Checkpoint> {
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| malformed(path, format!("zip: {e}")))?;
    let pkl = zip
        .file_names()
        .filter(|n| n.ends_with("data.pkl"))
        .min_by_key(|n| n.len())
        .map(str::to_string)
        .ok_or_else(|| {
            malformed(
                path,
                "zip archive without data.pkl (not a torch checkpoint)",
            )
        })?;
    let dir = pkl.strip_suffix("data.pkl").unwrap_or("").to_string();
    let obj = {
        let entry = zip
            .by_name(&pkl)
            .map_err(|e| malformed(path, format!("{pkl}: {e}")))?;
        parse_pickle(path, &mut BufReader::new(entry), &pkl)?
    };
    let (nested_key, refs) = select_state_dict(path, &obj)?;
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut tensors = HashMap::with_capacity(refs.len());
    for (name, r) in refs {
        if !storages.contains_key(&r.storage_key) {
            let entry_name = format!("{dir}data/{}", r.storage_key);
            let mut entry = zip
                .by_name(&entry_name)
                .map_err(|e| malformed(path, format!("storage {entry_name} of `{name}`: {e}")))?;
            let mut buf = Vec::with_capacity(entry.size() as usize);
            entry.read_to_end(&mut buf).map_err(io)?;
            storages.insert(r.storage_key.clone(), buf);
        }
        let bytes = &storages[&r.storage_key];
        tensors.insert(name.clone(), build_tensor(path, &name, &r, bytes)?);
    }
    Ok(Checkpoint {
        format: Format::TorchZip,
        nested_key,
        tensors,
    })
}

/// Records the storage class of every persistent id in the object tree (legacy files
/// store all storages back to back and we need each element size to skip the unused).
fn collect_storages(o: &Object, out: &mut HashMap<String, String>) {
    match o {
        Object::PersistentLoad(_) => {
            if let Some((class, key, _)) = storage_of(o) {
                out.insert(key, class);
            }
        }
        Object::Tuple(v) | Object::List(v) => v.iter().for_each(|x| collect_storages(x, out)),
        Object::Dict(d) => d.iter().for_each(|(k, v)| {
            collect_storages(k, out);
            collect_storages(v, out);
        }),
        Object::Reduce { callable, args } | Object::Build { callable, args } => {
            collect_storages(callable, out);
            collect_storages(args, out);
        }
        _ => {}
    }
}

fn read_legacy(path: &Path) -> Result<Checkpoint> {
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let mut r = BufReader::new(file);
    // 1. Magic number pickle: PROTO 2, LONG1 10 <magic>, STOP (sniffed already).
    let mut magic = [0u8; 15];
    r.read_exact(&mut magic).map_err(io)?;
    if magic[..4] != [0x80, 0x02, 0x8a, 0x0a] || magic[4..14] != LEGACY_MAGIC || magic[14] != b'.' {
        return Err(not_ckpt(path, "bad legacy torch magic number"));
    }
    // 2. Protocol version (1001).
    match parse_pickle(path, &mut r, "protocol version")? {
        Object::Int(1001) => {}
        other => {
            return Err(malformed(
                path,
                format!("unsupported legacy protocol {other:?}"),
            ))
        }
    }
    // 3. sys_info: refuse big-endian files.
    if let Object::Dict(info) = parse_pickle(path, &mut r, "sys_info")? {
        let big_endian = info.iter().any(|(k, v)| {
            *k == Object::Unicode("little_endian".into()) && *v == Object::Bool(false)
        });
        if big_endian {
            return Err(malformed(path, "big-endian checkpoints are not supported"));
        }
    }
    // 4. The object itself, storages as persistent ids.
    let obj = parse_pickle(path, &mut r, "object")?;
    let (nested_key, refs) = select_state_dict(path, &obj)?;
    let mut classes = HashMap::new();
    collect_storages(&obj, &mut classes);
    // 5. Storage keys in file order.
    let keys = match parse_pickle(path, &mut r, "storage keys")? {
        Object::List(k) | Object::Tuple(k) => k
            .into_iter()
            .map(|k| match k {
                Object::Unicode(s) => Ok(s),
                other => Err(malformed(
                    path,
                    format!("storage key {other:?} is not a string"),
                )),
            })
            .collect::<Result<Vec<_>>>()?,
        other => return Err(malformed(path, format!("storage key list is {other:?}"))),
    };
    // 6. Raw storages: u64 LE element count, then the bytes. Keep only the needed ones.
    let needed: std::collections::HashSet<&str> =
        refs.iter().map(|(_, t)| t.storage_key.as_str()).collect();
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    for key in keys {
        let class = classes.get(&key).ok_or_else(|| {
            malformed(
                path,
                format!("storage {key} is not referenced by the object"),
            )
        })?;
        let es = storage_elem_size(class)
            .ok_or_else(|| malformed(path, format!("storage {key} has unknown type {class}")))?;
        let mut n8 = [0u8; 8];
        r.read_exact(&mut n8)
            .map_err(|e| malformed(path, format!("storage {key}: truncated file ({e})")))?;
        let nbytes = u64::from_le_bytes(n8)
            .checked_mul(es as u64)
            .ok_or_else(|| malformed(path, format!("storage {key}: absurd size")))?;
        if needed.contains(key.as_str()) {
            let mut buf = Vec::new();
            (&mut r).take(nbytes).read_to_end(&mut buf).map_err(io)?;
            if buf.len() as u64 != nbytes {
                return Err(malformed(path, format!("storage {key}: truncated file")));
            }
            storages.insert(key, buf);
        } else {
            let skip = i64::try_from(nbytes)
                .map_err(|_| malformed(path, format!("storage {key}: absurd size")))?;
            r.seek(SeekFrom::Current(skip)).map_err(io)?;
        }
    }
    let mut tensors = HashMap::with_capacity(refs.len());
    for (name, t) in refs {
        let bytes = storages.get(&t.storage_key).ok_or_else(|| {
            malformed(
                path,
                format!("storage {} of `{name}` missing", t.storage_key),
            )
        })?;
        tensors.insert(name.clone(), build_tensor(path, &name, &t, bytes)?);
    }
    Ok(Checkpoint {
        format: Format::TorchLegacy,
        nested_key,
        tensors,
    })
}

/// Keeps only the keys starting with `prefix`, with the prefix removed (an empty prefix
/// keeps everything unchanged).
pub fn strip_prefix(map: HashMap<String, Tensor>, prefix: &str) -> HashMap<String, Tensor> {
    map.into_iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|s| (s.to_string(), v)))
        .collect()
}

/// Outcome of [`load_into`]: every model variable is either loaded, missing or
/// mismatched; every checkpoint key under the prefix is either used, ignored
/// (`num_batches_tracked`) or unexpected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Model variables with no checkpoint entry (they keep their initial values).
    pub missing: Vec<String>,
    /// Checkpoint keys (prefix stripped) that the model does not have.
    pub unexpected: Vec<String>,
    /// (name, model shape, checkpoint shape) pairs that were not loaded.
    pub mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// Number of variables loaded.
    pub loaded: usize,
}

impl LoadReport {
    /// True when every variable was loaded and nothing was left over.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.mismatched.is_empty()
    }

    /// Turns a non-clean report into an error listing the offending names (PyTorch's
    /// `strict=True`).
    pub fn strict(self) -> Result<Self> {
        if self.is_clean() {
            return Ok(self);
        }
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!("missing keys {:?}", self.missing));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!("unexpected keys {:?}", self.unexpected));
        }
        for (n, m, c) in &self.mismatched {
            parts.push(format!("`{n}`: model shape {m:?}, checkpoint shape {c:?}"));
        }
        Err(ModelError::Mismatch(parts.join("; ")))
    }
}

/// Copies `tensors[prefix + name]` into every variable `name` of `varmap` (converting
/// dtype and device), leaving missing or misshaped ones untouched and reporting them.
/// `num_batches_tracked` entries are ignored.
pub fn load_into(
    varmap: &VarMap,
    tensors: &HashMap<String, Tensor>,
    prefix: &str,
) -> Result<LoadReport> {
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| ModelError::Mismatch("VarMap lock poisoned".into()))?;
    let mut report = LoadReport::default();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let var = &vars[name];
        let key = format!("{prefix}{name}");
        match tensors.get(&key) {
            None => report.missing.push(name.clone()),
            Some(t) if t.dims() != var.dims() => {
                report
                    .mismatched
                    .push((name.clone(), var.dims().to_vec(), t.dims().to_vec()))
            }
            Some(t) => {
                let t = t.to_dtype(var.dtype())?.to_device(var.device())?;
                var.set(&t)?;
                report.loaded += 1;
            }
        }
    }
    let mut unexpected: Vec<String> = tensors
        .keys()
        .filter_map(|k| k.strip_prefix(prefix))
        .filter(|k| !k.ends_with("num_batches_tracked") && !vars.contains_key(*k))
        .map(str::to_string)
        .collect();
    unexpected.sort();
    report.unexpected = unexpected;
    Ok(report)
}

/// All variables of a VarMap as a name -> tensor map (for [`save_safetensors`]).
pub fn varmap_tensors(varmap: &VarMap) -> Result<HashMap<String, Tensor>> {
    let vars = varmap
        .data()
        .lock()
        .map_err(|_| ModelError::Mismatch("VarMap lock poisoned".into()))?;
    Ok(vars
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect())
}

/// Adds an int64 `num_batches_tracked` (value `count`) next to every `running_mean`, so a
/// PyTorch `load_state_dict(strict=True)` accepts the exported file.
pub fn with_num_batches_tracked(map: &mut HashMap<String, Tensor>, count: i64) -> Result<()> {
    let bn: Vec<String> = map
        .keys()
        .filter_map(|k| {
            k.strip_suffix("running_mean")
                .map(|p| format!("{p}num_batches_tracked"))
        })
        .collect();
    for k in bn {
        if let std::collections::hash_map::Entry::Vacant(e) = map.entry(k) {
            e.insert(Tensor::new(count, &Device::Cpu)?);
        }
    }
    Ok(())
}

/// Writes `tensors` as safetensors atomically (temporary file in the same directory,
/// then rename), so an interrupted export never leaves a truncated checkpoint.
pub fn save_safetensors(tensors: &HashMap<String, Tensor>, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| ModelError::BadTensor {
            name: path.display().to_string(),
            msg: "output path has no file name".into(),
        })?
        .to_string_lossy()
        .to_string();
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let contiguous = tensors
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.contiguous()?)))
        .collect::<Result<HashMap<_, _>>>()?;
    if let Err(e) = candle_core::safetensors::save(&contiguous, &tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(malformed(path, format!("writing safetensors: {e}")));
    }
    std::fs::rename(&tmp, path).map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        ModelError::Io {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Saves every variable of `varmap` (weights and BN running stats) atomically.
pub fn save_varmap(varmap: &VarMap, path: impl AsRef<Path>) -> Result<()> {
    save_safetensors(&varmap_tensors(varmap)?, path)
}

/// Checks that every element of `t` is finite; the error names the tensor and counts
/// the NaN/Inf elements. Forward passes do not call this (it costs a device sync and a
/// full pass over the data): call it on inputs you do not trust.
pub fn check_finite(t: &Tensor, name: &str) -> Result<()> {
    let v = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let bad = v.iter().filter(|x| !x.is_finite()).count();
    if bad > 0 {
        return Err(ModelError::BadTensor {
            name: name.to_string(),
            msg: format!("{bad} of {} elements are NaN or infinite", v.len()),
        });
    }
    Ok(())
}
