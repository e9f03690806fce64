//! The one place where a backend and device are chosen.

use anyhow::{Result, bail};
use burn::tensor::{Device, FloatDType};
use clap::ValueEnum;
use rnnlm_train::RunInfo;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// Burn's pure-Rust CPU backend (always built).
    Flex,
    /// ndarray CPU backend (deprecated in Burn 0.22).
    Ndarray,
    /// wgpu: Vulkan, Metal or DX12 GPUs, or a software Vulkan device.
    Wgpu,
    /// libtorch through tch (needs libtorch 2.9.0).
    Tch,
    /// CUDA through CubeCL.
    Cuda,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Dtype {
    F32,
    F64,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DeviceArgs {
    /// Burn backend.
    #[arg(long, value_enum, default_value = "flex")]
    pub backend: Backend,
    /// GPU index for wgpu, tch and cuda (wgpu: the default adapter, tch: the CPU,
    /// cuda: GPU 0 when absent).
    #[arg(long)]
    pub device: Option<usize>,
    /// Float precision (f64 on flex and ndarray) [default: the run's, else f32].
    #[arg(long, value_enum)]
    pub dtype: Option<Dtype>,
    /// CPU threads for the flex backend [default: the run's, else all cores].
    #[arg(long)]
    pub threads: Option<usize>,
}

impl Backend {
    /// Whether this backend computes on the host CPU (so the fused engine applies).
    pub fn computes_on_host(self) -> bool {
        matches!(self, Self::Flex | Self::Ndarray)
    }

    pub fn feature(self) -> Option<&'static str> {
        match self {
            Self::Flex => None,
            Self::Ndarray => Some("ndarray"),
            Self::Wgpu => Some("wgpu"),
            Self::Tch => Some("tch"),
            Self::Cuda => Some("cuda"),
        }
    }

    /// Whether this binary was built with the backend.
    pub fn built(self) -> bool {
        match self {
            Self::Flex => true,
            Self::Ndarray => cfg!(feature = "ndarray"),
            Self::Wgpu => cfg!(feature = "wgpu"),
            Self::Tch => cfg!(feature = "tch"),
            Self::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// Builds this CLI with the backend's feature and runs the same command with it;
    /// never returns. Used under `cargo xtask`, whose `.cargo/config.toml` sets
    /// `RNNLM_AUTO_BUILD=1`. The build goes beside the default one, in the same target
    /// directory: every dependency whose features the backend leaves alone is shared
    /// (cargo keeps a build per feature set, and `cargo xtask` puts the default binary
    /// back in place at its next run).
    fn rerun_with_feature(self) -> Result<()> {
        let feature = self.feature().expect("flex is always built");
        eprintln!(
            "building rnnlm with the `{feature}` backend (the first build of a backend takes a while)..."
        );
        let status = cargo()
            .args([
                "run",
                "--release",
                "--quiet",
                "-p",
                "xtask",
                "--features",
                feature,
            ])
            .arg("--")
            .args(std::env::args_os().skip(1))
            .env("RNNLM_AUTO_BUILD", "0")
            .status()?;
        std::process::exit(status.code().unwrap_or(1));
    }

    pub fn feature_hint(self) -> String {
        let feature = self.feature().unwrap_or_default();
        format!("cargo run --release -p xtask --features {feature} -- ...")
    }
}

/// `cargo` (the one running `cargo xtask`, if any), in the repository.
pub fn cargo() -> std::process::Command {
    let mut cargo =
        std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo.current_dir(repository());
    cargo
}

/// The repository this CLI was built from.
pub fn repository() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The cores the OS gives this process (the thread pools' default size).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl DeviceArgs {
    /// What a new run records in `run.json`.
    pub fn info(&self) -> RunInfo {
        RunInfo {
            backend: format!("{:?}", self.backend).to_lowercase(),
            dtype: format!("{:?}", self.dtype.unwrap_or(Dtype::F32)).to_lowercase(),
            threads: self.threads.unwrap_or_else(cores),
        }
    }

    /// For commands that read a run: its float type and threads where no flag says otherwise.
    pub fn for_run(&self, info: Option<&RunInfo>) -> Result<Self> {
        let mut args = self.clone();
        if let Some(info) = info {
            let recorded = Dtype::from_str(&info.dtype, true)
                .map_err(|e| anyhow::anyhow!("run.json: dtype {:?}: {e}", info.dtype))?;
            args.dtype = args.dtype.or(Some(recorded));
            args.threads = args.threads.or(Some(info.threads));
        }
        Ok(args)
    }

    /// For `train --resume`: the run's float type and threads; a flag that differs from
    /// them is an error (either changes the numbers), another backend is said.
    pub fn for_resume(&self, info: Option<&RunInfo>, run: &std::path::Path) -> Result<Self> {
        let Some(info) = info else {
            return Ok(self.clone());
        };
        let args = self.for_run(Some(info))?;
        let given = args.info();
        let path = run.join("run.json");
        if given.dtype != info.dtype {
            bail!(
                "the run computes in {} ({}); resume it without --dtype or with --dtype {}",
                info.dtype,
                path.display(),
                info.dtype
            );
        }
        if given.threads != info.threads {
            bail!(
                "the run was trained with {} threads ({}); another count changes its sums in the last digits: resume with --threads {} (or without --threads)",
                info.threads,
                path.display(),
                info.threads
            );
        }
        if given.backend != info.backend {
            eprintln!(
                "note: the run was trained on {}, it continues on {} (results may differ in the last digits)",
                info.backend, given.backend
            );
        }
        Ok(args)
    }

    /// The autodiff device for the chosen backend, and its name for reports.
    pub fn device(&self) -> Result<(Device, String)> {
        if let Some(n) = self.threads {
            let most = 4 * cores();
            if n == 0 || n > most {
                bail!(
                    "--threads {n}: give 1 to {most} (four times the {} cores here)",
                    cores()
                );
            }
            // Read when the thread pools start, before any tensor work: rayon's (flex,
            // ndarray) and OpenMP's (libtorch).
            unsafe {
                std::env::set_var("RAYON_NUM_THREADS", n.to_string());
                std::env::set_var("OMP_NUM_THREADS", n.to_string());
            }
        }
        if !self.backend.built() {
            if std::env::var_os("RNNLM_AUTO_BUILD").is_some_and(|v| v == "1") {
                self.backend.rerun_with_feature()?;
            }
            bail!(
                "backend {:?} is not built into this binary; build with its feature: {}",
                self.backend,
                self.backend.feature_hint()
            );
        }
        let (mut device, name) = self.base_device()?;
        if !self.backend.computes_on_host() {
            probe(&device, &name)?;
        }
        if self.dtype == Some(Dtype::F64) {
            if !matches!(self.backend, Backend::Flex | Backend::Ndarray) {
                bail!(
                    "--dtype f64 is supported on the flex and ndarray backends, not {:?}",
                    self.backend
                );
            }
            device
                .configure(FloatDType::F64)
                .map_err(|e| anyhow::anyhow!("cannot switch {name} to f64: {e:?}"))?;
        }
        Ok((device.autodiff(), name))
    }

    #[allow(unused_variables)]
    fn base_device(&self) -> Result<(Device, String)> {
        let index = self.device;
        Ok(match self.backend {
            Backend::Flex => (Device::flex(), "flex (cpu)".into()),
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            // ndarray is deprecated in Burn 0.22; kept as the design card names it
            Backend::Ndarray => (Device::ndarray(), "ndarray (cpu)".into()),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => match index {
                None => (
                    Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
                    "wgpu (default adapter)".into(),
                ),
                Some(i) => (
                    Device::wgpu(burn::tensor::DeviceKind::DiscreteGpu(i)),
                    format!("wgpu:{i}"),
                ),
            },
            #[cfg(feature = "tch")]
            #[allow(deprecated)] // tch is deprecated in Burn 0.22
            Backend::Tch => match index {
                None => (Device::libtorch(), "tch (cpu)".into()),
                Some(i) => (Device::libtorch_cuda(i), format!("tch cuda:{i}")),
            },
            #[cfg(feature = "cuda")]
            Backend::Cuda => {
                let i = index.unwrap_or(0);
                (Device::cuda(i), format!("cuda:{i}"))
            }
            #[allow(unreachable_patterns)]
            other => bail!("backend {other:?} is not built into this binary"),
        })
    }
}

/// Runs one tiny operation on `device`: a GPU backend without a usable device or driver
/// panics deep inside its runtime, which becomes an error naming the device here.
fn probe(device: &Device, name: &str) -> Result<()> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(|| {
        burn::tensor::Tensor::<1>::ones([1], device)
            .into_data()
            .iter::<f64>()
            .next()
    });
    std::panic::set_hook(hook);
    match result {
        Ok(Some(1.0)) => Ok(()),
        Ok(other) => bail!("{name} computed {other:?} for 1.0: the device is not usable"),
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            bail!(
                "{name}: no usable device ({why}); check the GPU driver, or --device for another index"
            )
        }
    }
}

/// Build and run environment for burn-tch with PyPI's `torch==2.9.0` as libtorch:
/// `LIBTORCH_USE_PYTORCH=1` and its `lib/` on `LD_LIBRARY_PATH`.
pub fn tch_env() -> Result<Vec<(String, String)>> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import os, torch; print(os.path.dirname(torch.__file__))",
        ])
        .output();
    let torch = match out {
        Ok(out) if out.status.success() => String::from_utf8(out.stdout)?.trim().to_string(),
        _ => bail!(
            "the tch backend needs libtorch 2.9.0: `python3 -m pip install torch==2.9.0` (or `cargo xtask check-backend tch`), or set LIBTORCH"
        ),
    };
    let old = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    Ok(vec![
        ("LIBTORCH_USE_PYTORCH".into(), "1".into()),
        ("LD_LIBRARY_PATH".into(), format!("{torch}/lib:{old}")),
    ])
}
