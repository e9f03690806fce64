//! Named tensors in safetensors files (the parity fixtures and their outputs).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::tensor::{DType, TensorData};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::ModelError;

/// Tensors by name, read from or written to one safetensors file.
#[derive(Debug, Clone, Default)]
pub struct NamedTensors {
    pub file: String,
    pub tensors: BTreeMap<String, TensorData>,
    pub metadata: HashMap<String, String>,
}

impl NamedTensors {
    pub fn read(path: &Path) -> Result<Self, ModelError> {
        let err = |reason: String| ModelError::Read {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| err(e.to_string()))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| err(e.to_string()))?;
        let file = path.display().to_string();
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let shape = view.shape().to_vec();
            let raw = view.data();
            let data = match view.dtype() {
                Dtype::F32 => TensorData::new(le_values(raw, f32::from_le_bytes), shape),
                Dtype::F64 => TensorData::new(le_values(raw, f64::from_le_bytes), shape),
                Dtype::I64 => TensorData::new(le_values(raw, i64::from_le_bytes), shape),
                other => {
                    return Err(ModelError::BadDtype {
                        file,
                        name,
                        dtype: format!("{other:?}"),
                    });
                }
            };
            tensors.insert(name, data);
        }
        Ok(Self {
            file,
            tensors,
            metadata: meta.metadata().clone().unwrap_or_default(),
        })
    }

    /// The tensor `name`, checked against the expected shape.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<TensorData, ModelError> {
        let data = self
            .tensors
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                file: self.file.clone(),
                name: name.to_string(),
            })?;
        if data.shape().as_slice() != shape {
            return Err(ModelError::BadShape {
                file: self.file.clone(),
                name: name.to_string(),
                expected: shape.to_vec(),
                actual: data.shape().to_vec(),
            });
        }
        Ok(data.clone())
    }

    /// The shape of `name`, or a missing-tensor error.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>, ModelError> {
        self.tensors
            .get(name)
            .map(|d| d.shape().to_vec())
            .ok_or_else(|| ModelError::MissingTensor {
                file: self.file.clone(),
                name: name.to_string(),
            })
    }

    pub fn insert(&mut self, name: impl Into<String>, data: TensorData) {
        self.tensors.insert(name.into(), data);
    }

    /// Writes all tensors (F32, F64 or I64) through a temp file and a rename.
    pub fn write(&self, path: &Path) -> Result<(), ModelError> {
        let err = |reason: String| ModelError::Write {
            path: path.to_path_buf(),
            reason,
        };
        let mut bufs = Vec::new();
        for (name, data) in &self.tensors {
            let (dtype, bytes) = match data.dtype() {
                DType::F32 => (Dtype::F32, le_bytes(data.iter::<f32>(), f32::to_le_bytes)),
                DType::F64 => (Dtype::F64, le_bytes(data.iter::<f64>(), f64::to_le_bytes)),
                DType::I64 | DType::I32 => {
                    (Dtype::I64, le_bytes(data.iter::<i64>(), i64::to_le_bytes))
                }
                other => {
                    return Err(err(format!(
                        "tensor `{name}` has unsupported dtype {other:?}"
                    )));
                }
            };
            bufs.push((name.clone(), dtype, data.shape().to_vec(), bytes));
        }
        let views: Vec<(String, TensorView)> = bufs
            .iter()
            .map(|(n, d, s, b)| {
                Ok((
                    n.clone(),
                    TensorView::new(*d, s.clone(), b).map_err(|e| err(e.to_string()))?,
                ))
            })
            .collect::<Result<_, ModelError>>()?;
        let meta = (!self.metadata.is_empty()).then(|| self.metadata.clone());
        let bytes = safetensors::serialize(views, meta).map_err(|e| err(e.to_string()))?;
        rnnlm_data::atomic_write(path, &bytes).map_err(|e| err(e.reason()))
    }
}

fn le_values<T, const N: usize>(raw: &[u8], from: fn([u8; N]) -> T) -> Vec<T> {
    raw.chunks_exact(N)
        .map(|c| from(c.try_into().expect("chunk of N bytes")))
        .collect()
}

fn le_bytes<T, const N: usize>(values: impl Iterator<Item = T>, to: fn(T) -> [u8; N]) -> Vec<u8> {
    values.flat_map(to).collect()
}
