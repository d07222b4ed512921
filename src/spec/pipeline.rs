//! Serde types of a pipeline file (`pipelines/*.ron`); their value checks ([`check`]) live
//! in `spec::check`, one function per section. `crate::pipeline::resolve` turns a checked
//! spec into the stages' input.
//!
//! A pipeline declares an experiment: data, the search space (a path relative to the
//! pipeline file, with optional width and depth overrides per stage), the search strategy
//! and budgets, retraining, export, validation tolerances and the profiling plan. Defaults
//! are written once here (`#[serde(default = ...)]`) and shown by `nas-pipe check`.

use serde::{Deserialize, Serialize};

use super::Spanned;
pub use super::check::{MAX_BATCH, MAX_RUNS, MAX_THREADS, check};
use crate::spec::space::Input;

/// An experiment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// Names the run folder `exports/<name>/`.
    pub name: Spanned<String>,
    /// Seed of every random choice. Default 0.
    #[serde(default)]
    pub seed: u64,
    /// Where tensors live. Default `Auto` (CUDA device 0 when this build has CUDA and the
    /// device works, else the CPU). `--device` overrides it.
    #[serde(default)]
    pub device: Spanned<Device>,
    pub data: Spanned<Data>,
    /// The validation and test fractions carved from the training part when the data set
    /// has no validation (or no test) part of its own. Default `(validation: 0.1, test: 0.1)`.
    #[serde(default)]
    pub split: Spanned<Split>,
    /// Per-channel normalisation of the images. Default `Computed` (from the images a stage
    /// trains on).
    #[serde(default)]
    pub normalize: Spanned<Normalization>,
    /// The search space file, relative to this file.
    pub space: Spanned<String>,
    /// A fixed architecture (file, published name or genotype string); skips the search.
    #[serde(default)]
    pub genotype: Option<Spanned<String>>,
    #[serde(default)]
    pub search: Option<Spanned<Search>>,
    #[serde(default)]
    pub retrain: Option<Spanned<Retrain>>,
    #[serde(default)]
    pub export: Option<Spanned<Export>>,
    #[serde(default)]
    pub validate: Option<Spanned<Validate>>,
    #[serde(default)]
    pub profile: Option<Spanned<Profile>>,
    /// The trial ledger of a multi-trial search run on workers: `sqlite:PATH` or
    /// `postgres://USER@HOST[:PORT]/DB` (never a password: that comes from `PGPASSWORD`).
    /// `--storage` overrides it. Default: `ledger.sqlite` in the run folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// A wall-clock budget for the whole run: the search's images and epochs and
    /// retraining's epochs and images are planned to fit it from throughput measured on
    /// this machine (`crate::pipeline::budget`). `--budget` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Spanned<Budget>>,
}

/// A wall-clock budget: `Budget(total: "1h")`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// The whole run's time, as `humantime` reads it: `"90min"`, `"1h 30m"`, `"45s"`.
    pub total: Spanned<String>,
    /// The share of the time left after calibration that the search gets (the rest goes
    /// to retraining and the stages after it). Default 0.2.
    #[serde(default = "search_share")]
    pub search: Spanned<f64>,
}

impl Budget {
    /// The total in seconds; `None` when it is not a duration the check accepts.
    pub fn total_seconds(&self) -> Option<f64> {
        crate::spec::check::budget::total_seconds(&self.total.value).ok()
    }
}

/// The budget's default search share.
pub const DEFAULT_SEARCH_SHARE: f64 = 0.2;

fn search_share() -> Spanned<f64> {
    sp(DEFAULT_SEARCH_SHARE)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Device {
    #[default]
    Auto,
    Cpu,
    Cuda(u32),
}

/// A data set. Relative directories are relative to the pipeline file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Data {
    /// Fashion-MNIST IDX files (`train-images-idx3-ubyte[.gz]`, ...): 1×28×28, 10 classes.
    /// `limit`: use only the first this many training images; the validation part (and a
    /// missing test part) is carved from these (`split`). Default: all.
    FashionMnist {
        dir: String,
        #[serde(default)]
        limit: Option<Spanned<u32>>,
    },
    /// MNIST IDX files: 1×28×28, 10 classes.
    Mnist {
        dir: String,
        #[serde(default)]
        limit: Option<Spanned<u32>>,
    },
    /// CIFAR-10 binary batches (`data_batch_1.bin` .. `test_batch.bin`): 3×32×32, 10 classes.
    Cifar10 {
        dir: String,
        #[serde(default)]
        limit: Option<Spanned<u32>>,
    },
    /// Random images of the given shape with learnable labels, for tests.
    Synthetic {
        channels: u32,
        size: u32,
        classes: u32,
        train: u32,
        test: u32,
    },
    /// A folder with one sub-folder of images per class (class names: the folder names,
    /// sorted, or the declared `class_names`), or with `train/` and optional `val/` and
    /// `test/` sub-folders laid out that way, used as given. PNG, JPEG, BMP, WebP and GIF
    /// (first frame) files are read, in sub-folders too; other files are ignored. Training
    /// images are taken from the classes in turn (first image of each class, then the
    /// second, ...), so that every prefix, and `limit`, is balanced.
    ImageFolder {
        dir: String,
        image: Spanned<ImageOptions>,
    },
    /// A CSV manifest of `path,label` rows (a first row `path,label` is a header). Labels
    /// are class indices when every label is a whole number, else class names (classes: the
    /// names, sorted, or the declared `class_names`). Paths are relative to `root`.
    Csv {
        /// The training manifest.
        file: String,
        /// The folder the manifest's paths are relative to. Default: the manifest's folder.
        #[serde(default)]
        root: Option<String>,
        /// A manifest of validation images. Default: none.
        #[serde(default)]
        val: Option<String>,
        /// A manifest of test images. Default: none.
        #[serde(default)]
        test: Option<String>,
        image: Spanned<ImageOptions>,
    },
    /// NumPy arrays (`.npy`, or `name.npz:array` for one array of an `.npz` archive):
    /// images uint8 (0..=255) or float32 (0..=1, scaled by 255 and rounded), shaped
    /// `[N, H, W]` or `[N, H, W, C]` / `[N, C, H, W]` per `layout`; labels `[N]` of an
    /// integer type, each below the number of classes (the largest label + 1, or the
    /// length of `classes`).
    Npy {
        images: String,
        labels: String,
        /// `Nhwc` (NumPy, Keras) or `Nchw` (PyTorch). Default `Nhwc`.
        #[serde(default)]
        layout: Layout,
        /// A test pair. Default: none.
        #[serde(default)]
        test_images: Option<String>,
        #[serde(default)]
        test_labels: Option<String>,
        /// Class names in label order. Default: `"0"`, `"1"`, ... The same as the `image`
        /// options' `class_names` (kept so that existing pipelines read unchanged); give
        /// one or the other.
        #[serde(default)]
        classes: Option<Spanned<Vec<String>>>,
        image: Spanned<ImageOptions>,
    },
}

/// What every image of an image source becomes, shared by `ImageFolder`, `Csv` and `Npy`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageOptions {
    /// The side of the square images the network sees, in pixels.
    pub size: Spanned<u32>,
    /// 1 (grayscale: ITU-R BT.601 luma of colour images, rounded as Pillow's
    /// `convert("L")`) or 3 (RGB: grey images repeated).
    /// Default 3.
    #[serde(default = "three_channels")]
    pub channels: Spanned<u32>,
    /// How an image of another size or shape becomes `size`×`size`. Default `Crop`.
    #[serde(default)]
    pub resize: Resize,
    /// Use only the first this many training images. Default: all.
    #[serde(default)]
    pub limit: Option<Spanned<u32>>,
    /// Skip an image that cannot be read (listed in the run folder's `data/skipped.json`)
    /// instead of stopping. Default `false`.
    #[serde(default)]
    pub skip_unreadable: bool,
    /// The class names in label order (as Keras's `image_dataset_from_directory(class_names
    /// = ...)`): the first is label 0. They name the classes in the exported model and the
    /// report. With them the spec alone gives the input, so a pipeline no stage of which
    /// reads images needs no files. When the files are read they must agree: an image
    /// folder's class sub-folders (in `train/`, and in `val/` and `test/` when present) are
    /// exactly these names; a CSV manifest's labels are these names, or indices below
    /// their count; an `Npy` source's labels are below their count. At least 2, distinct,
    /// none empty. Default: from the files (folder names or manifest labels, sorted; `Npy`:
    /// `"0"` to the largest label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_names: Option<Spanned<Vec<String>>>,
}

/// How an image is brought to the target size (Catmull-Rom filter in both).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resize {
    /// Scale the shorter side to `size`, then cut the centre square (torchvision's
    /// `Resize` + `CenterCrop`): keeps the aspect ratio.
    #[default]
    Crop,
    /// Scale both sides to `size`: keeps the whole image, distorts its aspect ratio.
    Stretch,
}

/// The axis order of a 4-D image array.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    /// `[N, H, W, C]`.
    #[default]
    Nhwc,
    /// `[N, C, H, W]`.
    Nchw,
}

fn three_channels() -> Spanned<u32> {
    Spanned::unspanned(3)
}

impl Data {
    /// Channels and image side of the images the data set gives.
    pub fn shape(&self) -> (u32, u32) {
        match self {
            Data::FashionMnist { .. } | Data::Mnist { .. } => (1, 28),
            Data::Cifar10 { .. } => (3, 32),
            Data::Synthetic { channels, size, .. } => (*channels, *size),
            Data::ImageFolder { image, .. } | Data::Csv { image, .. } | Data::Npy { image, .. } => {
                (image.channels.value, image.size.value)
            }
        }
    }

    /// The input shape and class count, when the spec alone says them; `None` for image
    /// sources whose classes come from their files (`crate::pipeline::resolve` lists them),
    /// that is, without [`Data::class_names`].
    pub fn input(&self) -> Option<Input> {
        let (channels, size) = self.shape();
        let classes = match self {
            Data::FashionMnist { .. } | Data::Mnist { .. } | Data::Cifar10 { .. } => 10,
            Data::Synthetic { classes, .. } => *classes,
            Data::ImageFolder { .. } | Data::Csv { .. } | Data::Npy { .. } => {
                self.class_names()?.value.len() as u32
            }
        };
        Some(Input {
            channels,
            size,
            classes,
        })
    }

    /// The class names an image source declares, in label order: the image options'
    /// `class_names`, or an `Npy` source's `classes` (`spec::check` refuses both at once).
    pub fn class_names(&self) -> Option<&Spanned<Vec<String>>> {
        let declared = self.image_options()?.class_names.as_ref();
        match self {
            Data::Npy { classes, .. } => declared.or(classes.as_ref()),
            _ => declared,
        }
    }

    /// The shared image options of an image source.
    pub fn image_options(&self) -> Option<&Spanned<ImageOptions>> {
        match self {
            Data::ImageFolder { image, .. } | Data::Csv { image, .. } | Data::Npy { image, .. } => {
                Some(image)
            }
            _ => None,
        }
    }
}

/// The parts carved from a data set's training part, as fractions of it (after `limit`).
///
/// Each class gives `round(fraction × its images)` images to a carved part, at least one,
/// and keeps at least one for training; which images is a seeded shuffle per class (the
/// pipeline's `seed`), the same on every machine. A part the data set has of its own is used
/// as given and its fraction is ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Split {
    /// Selects retraining's `best.safetensors`. In (0, 1). Default 0.1.
    #[serde(default = "tenth")]
    pub validation: Spanned<f64>,
    /// Used only when the data set has no test part. In (0, 1). Default 0.1.
    #[serde(default = "tenth")]
    pub test: Spanned<f64>,
}

impl Default for Split {
    fn default() -> Split {
        Split {
            validation: tenth(),
            test: tenth(),
        }
    }
}

/// How images are normalised: `(pixel / 255 − mean) / std` per channel.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Normalization {
    /// Mean and standard deviation computed from the training images.
    #[default]
    Computed,
    /// Given values, one per channel, in units of pixel / 255.
    Given { mean: Vec<f32>, std: Vec<f32> },
}

/// Training-time augmentation. Default: none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Augment {
    /// Random crop back to the input size after zero padding by this many pixels. Default 0.
    #[serde(default)]
    pub crop_padding: u32,
    /// Random horizontal flip. Default `false`.
    #[serde(default)]
    pub flip: bool,
    /// Side of the square cut out after normalisation (0: none). Default 0.
    #[serde(default)]
    pub cutout: u32,
}

/// The search strategy and its budget.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
// One per pipeline, read once: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum Search {
    /// DARTS with weight sharing (Liu, Simonyan, Yang, ICLR 2019).
    Darts {
        /// `First` or `Second` (unrolled) order. Default `First`.
        #[serde(default)]
        order: Order,
        epochs: Spanned<u32>,
        batch_size: Spanned<u32>,
        /// Search on only the first this many training images. Default: all of them.
        #[serde(default)]
        images: Option<Spanned<u32>>,
        /// Portion of the (searched) training images that trains the weights; the rest
        /// trains the architecture. Default 0.5.
        #[serde(default = "half")]
        train_portion: Spanned<f64>,
        /// Cell width of the search network. Default: the space's.
        #[serde(default)]
        channels: Option<Spanned<u32>>,
        /// Depth of the search network. Default: the space's.
        #[serde(default)]
        layers: Option<Spanned<u32>>,
        weights: Spanned<Optimizer>,
        arch: Spanned<Optimizer>,
        #[serde(default)]
        augment: Augment,
        /// The DARTS-family method (DARTS, GDAS or PC-DARTS). Default `Standard`.
        #[serde(default)]
        variant: Spanned<Variant>,
        /// A differentiable expected-latency term added to the architecture loss. Default:
        /// none.
        #[serde(default)]
        latency: Option<Spanned<LatencyTerm>>,
    },
    /// Multi-trial search: a strategy proposes discrete architectures of the space, an
    /// evaluator scores each, and the best is returned. The Pareto front over `objectives`
    /// of every architecture evaluated is written as `search/pareto.json`.
    Trials {
        strategy: Spanned<Strategy>,
        evaluator: Spanned<Evaluator>,
        /// Architectures evaluated (queries; a repeated architecture counts again and is
        /// answered from the record).
        evaluations: Spanned<u32>,
        /// Stop early once this many seconds of wall time are spent (the result then depends
        /// on the machine's speed). Default: no time limit.
        #[serde(default)]
        seconds: Option<Spanned<f64>>,
        /// What the search maximises. Default `Accuracy`.
        #[serde(default)]
        reward: Spanned<Reward>,
        /// The objectives of the Pareto front, besides accuracy. Default: none.
        #[serde(default)]
        objectives: Spanned<Vec<Objective>>,
        /// Hard limits checked before a candidate is evaluated; a candidate over one is
        /// skipped and costs no evaluation. Default: none.
        #[serde(default)]
        constraints: Vec<Spanned<Constraint>>,
        /// How latency is measured when an objective, the reward or a constraint needs it.
        #[serde(default)]
        latency: Spanned<LatencyPlan>,
        /// Export each point of the Pareto front to ONNX with the weights its evaluation
        /// trained, and profile it in ONNX Runtime (`search/front/<n>/`). Default `false`.
        #[serde(default)]
        export_front: bool,
        /// Proposals per generation: the strategy proposes a whole generation from the
        /// results of earlier ones, and workers evaluate a generation's trials in parallel
        /// (`nas-pipe run --workers N`). Part of the result: the same generation gives the
        /// same search whatever the number of workers. Default 1 (propose, evaluate, learn,
        /// one at a time).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        generation: Option<Spanned<u32>>,
        /// A zero-cost prior: before the strategy's first architectures are evaluated,
        /// `pool` random architectures are scored at initialisation by a training-free
        /// proxy and the best `keep` become its first proposals; every evaluated
        /// candidate's three proxies are recorded. Needs an evaluator that trains. Default:
        /// none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        zero_cost: Option<Spanned<ZeroCost>>,
    },
}

/// The zero-cost prior of a multi-trial search (`stages::search::zero_cost`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZeroCost {
    /// The proxy that ranks the pool.
    pub prior: Spanned<Proxy>,
    /// Distinct random architectures scored (1 to 10,000).
    pub pool: Spanned<u32>,
    /// The best of the pool, proposed first (at most the pool and the strategy's initial
    /// random architectures).
    pub keep: Spanned<u32>,
    /// Training mini-batches NASWOT and grad_norm average over (1 to 64). Default 1.
    #[serde(default = "one")]
    pub batches: Spanned<u32>,
    /// Images per mini-batch (2 to 1,024). Default 64.
    #[serde(default = "sixty_four")]
    pub batch_size: Spanned<u32>,
}

/// A training-free proxy of a network at initialisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Proxy {
    /// Mellor et al. 2021: log |det| of the Hamming kernel of the ReLU codes of a batch.
    Naswot,
    /// Tanaka et al. 2020: Σ |θ ⊙ ∂R/∂θ| with |θ| and an all-ones input.
    Synflow,
    /// The L2 norm of the loss gradient on a batch.
    GradNorm,
}

/// A DARTS-family search method: how each forward weights an edge's candidates and when
/// the architecture weights move. Every variant derives the genotype with the space's
/// `derive` rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Variant {
    /// DARTS: every edge is Σₖ softmax(α)ₖ · opₖ(x).
    #[default]
    Standard,
    /// GDAS (Dong, Yang, CVPR 2019): each forward samples one candidate per edge with
    /// Gumbel-softmax at temperature τ (straight-through), and runs only that one. τ falls
    /// linearly from `tau_max` at the first epoch to `tau_min` at the last. First order only.
    Gdas {
        /// Temperature at the first epoch. Default 10.
        #[serde(default = "tau_max")]
        tau_max: Spanned<f64>,
        /// Temperature at the last epoch. Default 0.1.
        #[serde(default = "tau_min")]
        tau_min: Spanned<f64>,
    },
    /// PC-DARTS (Xu et al., ICLR 2020): partial channels and edge normalisation. Needs a
    /// space of cells whose candidates are ops (no motifs, no searchable chain layers).
    PcDarts {
        /// Only 1/k of each edge's channels go through its ops; the rest bypass them and
        /// the result is shuffled in k groups. Cell widths must be multiples of k. Default 4.
        #[serde(default = "four")]
        k: Spanned<u32>,
        /// Scale each edge by the softmax of a learnt β over its node's incoming edges, and
        /// derive from softmax(α) × that softmax. Default `true`.
        #[serde(default = "yes")]
        edge_normalization: bool,
        /// Architecture weights stay at their initial values for this many epochs while
        /// the weights train. At or beyond `epochs`, the genotype is derived from the
        /// initial architecture weights. Default 15.
        #[serde(default = "fifteen")]
        arch_warmup_epochs: Spanned<u32>,
    },
}

/// How a multi-trial search proposes architectures (the NAS-Bench-201 baselines).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Strategy {
    /// Uniformly random architectures.
    Random,
    /// Regularized (aging) evolution (Real et al., AmoebaNet): `population` random
    /// architectures, then each cycle samples `sample` members, mutates the best one (one
    /// edge's op or one input) and replaces the oldest member with the child.
    Evolution {
        /// Default 10 (NAS-Bench-201's setting).
        #[serde(default = "ten")]
        population: Spanned<u32>,
        /// Default 3 (NAS-Bench-201's setting).
        #[serde(default = "three")]
        sample: Spanned<u32>,
    },
    /// REINFORCE with a policy of independent softmax distributions, one per decision,
    /// trained with Adam on (reward − baseline) · ∇ log p, the baseline an exponential
    /// moving average of the rewards (NAS-Bench-201's REINFORCE).
    Reinforce {
        /// Adam learning rate of the policy logits. Default 0.01.
        #[serde(default = "reinforce_lr")]
        lr: Spanned<f64>,
        /// Momentum of the reward baseline. Default 0.9.
        #[serde(default = "momentum")]
        baseline_momentum: Spanned<f64>,
    },
    /// Local search (White et al., NASLib): the best of `init` random architectures, then
    /// its unasked one-edit neighbours in a seeded random order, moving to the first that
    /// is better; from a local optimum, a random restart.
    Local {
        /// Random architectures evaluated before the first climb. Default 10.
        #[serde(default = "ten")]
        init: Spanned<u32>,
    },
    /// Predictor-guided search (BANANAS-style): after `init` random architectures, every
    /// `batch` proposals an ensemble of `ensemble` small MLPs is trained on the
    /// evaluations so far and picks, by independent Thompson sampling, among the one-edit
    /// neighbours of the best evaluated architectures and 1000 random ones, the first pick
    /// of a batch among the neighbours of the best alone.
    Predictor {
        /// Random architectures evaluated before the predictor is trained. Default 20.
        #[serde(default = "twenty_spanned")]
        init: Spanned<u32>,
        /// MLPs in the ensemble. Default 5.
        #[serde(default = "five_spanned")]
        ensemble: Spanned<u32>,
        /// Proposals per training of the ensemble. Default 5.
        #[serde(default = "five_spanned")]
        batch: Spanned<u32>,
    },
}

/// How a candidate architecture is scored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
// One per pipeline, read once: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum Evaluator {
    /// Looks the architecture up in a benchmark table (CSV, optionally gzipped; path
    /// relative to the pipeline file) with an NAS-Bench-201 `cellstr` or `arch_str` column:
    /// the search sees column `select`, the report column `report` (a column the search
    /// never sees). Values in percent.
    Tabular {
        table: Spanned<String>,
        /// Default `"cifar10-val"`.
        #[serde(default = "cifar10_val")]
        select: Spanned<String>,
        /// Default `"cifar10-test"`.
        #[serde(default = "cifar10_test")]
        report: Spanned<String>,
    },
    /// Trains each candidate from scratch for a short budget on the first `train_portion`
    /// of the (first `images`) training images and scores it on the rest. The report
    /// column is the test-set accuracy, computed for the Pareto front only.
    Train {
        /// Use only the first this many training images. Default: all.
        #[serde(default)]
        images: Option<Spanned<u32>>,
        /// Default 0.8.
        #[serde(default = "four_fifths")]
        train_portion: Spanned<f64>,
        /// The proxy recipe: width, depth, epochs, batch size, optimizer, augmentation.
        recipe: Spanned<Retrain>,
    },
    /// Trains one weight-sharing network first, each step the path of a uniformly random
    /// architecture (single-path one-shot), then scores each candidate by its own path
    /// through the shared weights on the held-out training images (BN on batch
    /// statistics). There is no report signal.
    WeightSharing {
        /// Use only the first this many training images. Default: all.
        #[serde(default)]
        images: Option<Spanned<u32>>,
        /// The first portion trains the shared weights; the rest scores. Default 0.8.
        #[serde(default = "four_fifths")]
        train_portion: Spanned<f64>,
        epochs: Spanned<u32>,
        batch_size: Spanned<u32>,
        /// Cell width of the weight-sharing network. Default: the space's.
        #[serde(default)]
        channels: Option<Spanned<u32>>,
        /// Its depth. Default: the space's.
        #[serde(default)]
        layers: Option<Spanned<u32>>,
        /// Sgd with its cosine schedule.
        weights: Spanned<Optimizer>,
        #[serde(default)]
        augment: Augment,
        /// Score each candidate on only this many held-out images. Default: all of them.
        #[serde(default)]
        eval_images: Option<Spanned<u32>>,
    },
}

/// The scalar a multi-trial strategy maximises.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Reward {
    /// The evaluator's accuracy (in [0, 1]).
    #[default]
    Accuracy,
    /// MnasNet's soft latency reward: accuracy · (latency / target_ms)^w.
    MnasNet {
        target_ms: Spanned<f64>,
        /// Default −0.07.
        #[serde(default = "mnas_w")]
        w: Spanned<f64>,
    },
}

/// An objective of the Pareto front (accuracy, maximised, is always one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Objective {
    /// ONNX Runtime latency in ms, minimised.
    Latency,
    /// Parameters, minimised.
    Params,
    /// Multiply-accumulates of one image, minimised.
    Macs,
}

/// A hard limit on a candidate, checked before it is evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Constraint {
    /// ONNX Runtime latency at most this many ms.
    MaxLatencyMs(f64),
    /// At most this many parameters.
    MaxParams(u64),
    /// At most this many multiply-accumulates per image.
    MaxMacs(u64),
}

/// The expected latency of the relaxed architecture, `weight` · Σ over searchable edges of
/// Σₖ pₖ · latencyₖ (ms), with pₖ the edge's candidate weights (softmax of α) and latencyₖ
/// that op's ONNX Runtime latency at that place in the search network, from the space's
/// per-op table (measured once per machine with `timing`, `search/latency-table.json`).
/// Its gradient is added to the architecture gradient (first and second order alike).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyTerm {
    /// Loss units per millisecond.
    pub weight: Spanned<f64>,
    #[serde(default)]
    pub timing: Spanned<Timing>,
}

/// How a candidate's latency is measured: its whole network exported to ONNX and timed
/// in ONNX Runtime (each architecture once, cached under `search/latency/`), or predicted
/// from a per-op table measured once (`search/latency-table.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyPlan {
    /// Default `Measured`.
    #[serde(default)]
    pub method: LatencyMethod,
    #[serde(default)]
    pub timing: Spanned<Timing>,
}

/// One latency measurement in ONNX Runtime: the median of `runs` timed runs after `warmup`
/// untimed ones, at a batch size and intra-op thread count.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timing {
    /// Default 1.
    #[serde(default = "one_u32")]
    pub batch_size: u32,
    /// Intra-op threads. Default 1.
    #[serde(default = "one_u32")]
    pub threads: u32,
    /// Default 5.
    #[serde(default = "five")]
    pub warmup: u32,
    /// Default 30.
    #[serde(default = "thirty")]
    pub runs: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            batch_size: 1,
            threads: 1,
            warmup: 5,
            runs: 30,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LatencyMethod {
    /// The whole network, exported and timed.
    #[default]
    Measured,
    /// The sum of per-op latencies from a table measured once per space and machine.
    Table,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Order {
    #[default]
    First,
    Second,
}

/// An optimizer with its schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Optimizer {
    /// SGD; the learning rate falls from `lr` to `lr_min` over the epochs along `schedule`.
    Sgd {
        lr: Spanned<f64>,
        /// Default 0.
        #[serde(default)]
        lr_min: Spanned<f64>,
        /// Default 0.9.
        #[serde(default = "momentum")]
        momentum: Spanned<f64>,
        /// Default `false`.
        #[serde(default)]
        nesterov: bool,
        /// Default 0.
        #[serde(default)]
        weight_decay: Spanned<f64>,
        /// Clip the global gradient norm to this. Default: no clipping.
        #[serde(default)]
        grad_clip: Option<Spanned<f64>>,
        /// Linear warm-up epochs before the schedule. Default 0.
        #[serde(default)]
        warmup_epochs: u32,
        /// The shape of the fall from `lr` to `lr_min` after the warm-up. Default `Cosine`.
        #[serde(default, skip_serializing_if = "Schedule::is_cosine")]
        schedule: Schedule,
    },
    /// Adam with weight decay added to the gradient (coupled), constant rate.
    Adam {
        lr: Spanned<f64>,
        /// Default (0.9, 0.999).
        #[serde(default = "betas")]
        betas: Spanned<(f64, f64)>,
        /// Default 0.
        #[serde(default)]
        weight_decay: Spanned<f64>,
    },
}

/// How SGD's learning rate falls from `lr` to `lr_min` after the warm-up, updated every step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Schedule {
    /// Half a cosine (DARTS's `CosineAnnealingLR`).
    #[default]
    Cosine,
    /// A straight line. Under a short budget it trains better than the cosine (Li, Yumer and
    /// Ramanan, "Budgeted Training: Rethinking Deep Neural Network Training Under Resource
    /// Constraints", ICLR 2020).
    Linear,
}

impl Schedule {
    /// The default, which a spec leaves out when serialized (cache keys stay as they were).
    pub fn is_cosine(&self) -> bool {
        *self == Schedule::Cosine
    }
}

/// Retraining the derived architecture from scratch.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retrain {
    /// Cell width. Default: the space's.
    #[serde(default)]
    pub channels: Option<Spanned<u32>>,
    /// Depth. Default: the space's.
    #[serde(default)]
    pub layers: Option<Spanned<u32>>,
    pub epochs: Spanned<u32>,
    /// Training images per epoch: each epoch trains on the first this many of its own
    /// shuffled order of the training part. Default: all of it. Retraining only (a
    /// training evaluator has its own `images`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Spanned<u32>>,
    pub batch_size: Spanned<u32>,
    pub optimizer: Spanned<Optimizer>,
    /// Weight of the auxiliary head's loss (0: no auxiliary head). Default 0.
    #[serde(default)]
    pub auxiliary_weight: Spanned<f64>,
    /// Final drop-path probability, ramped linearly from 0. Default 0.
    #[serde(default)]
    pub drop_path: Spanned<f64>,
    /// Label smoothing. Default 0.
    #[serde(default)]
    pub label_smoothing: Spanned<f64>,
    #[serde(default)]
    pub augment: Augment,
    /// Evaluate on the validation part every this many epochs (and after the last); the
    /// test part is evaluated once, after the last. Default 1.
    #[serde(default = "one")]
    pub eval_every: Spanned<u32>,
    /// Keep an exponential moving average of the weights and BN statistics with this decay
    /// per step, warmed up as `min(ema, (1 + t) / (10 + t))` at step `t`; the validations,
    /// `best` and `last`, the test evaluation and the export then use the average. Default:
    /// none (the trained weights themselves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema: Option<Spanned<f64>>,
}

/// ONNX export.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum Export {
    Onnx {
        /// Default 21.
        #[serde(default = "opset")]
        opset: Spanned<u32>,
        /// Fold BN into the preceding convolution. Default `true`.
        #[serde(default = "yes")]
        fold_batch_norm: bool,
    },
}

/// ONNX Runtime against Candle on held-out data.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validate {
    /// Held-out images compared. Default 1000.
    #[serde(default = "thousand")]
    pub samples: Spanned<u32>,
    /// Largest allowed absolute logit difference. Default 1e-4.
    #[serde(default = "max_abs_diff")]
    pub max_abs_diff: Spanned<f64>,
    /// Smallest allowed top-1 agreement. Default 0.999.
    #[serde(default = "agreement")]
    pub min_top1_agreement: Spanned<f64>,
}

/// ONNX Runtime latency profiling.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Default [1, 32].
    #[serde(default = "batch_sizes")]
    pub batch_sizes: Spanned<Vec<u32>>,
    /// Intra-op threads. Default [1].
    #[serde(default = "threads")]
    pub threads: Spanned<Vec<u32>>,
    /// Untimed runs first. Default 20.
    #[serde(default = "twenty")]
    pub warmup: u32,
    /// Timed runs. Default 200.
    #[serde(default = "two_hundred")]
    pub runs: Spanned<u32>,
}

impl Pipeline {
    /// The spec as RON with every default written out: reads back to the same spec.
    pub fn to_ron(&self) -> String {
        let config = ron::ser::PrettyConfig::default()
            .struct_names(true)
            .extensions(ron::extensions::Extensions::IMPLICIT_SOME);
        // Serializing plain serde types to a String cannot fail.
        ron::ser::to_string_pretty(self, config).unwrap_or_else(|e| format!("/* {e} */"))
    }
}

fn sp<T>(v: T) -> Spanned<T> {
    Spanned::unspanned(v)
}
fn tenth() -> Spanned<f64> {
    sp(0.1)
}
fn half() -> Spanned<f64> {
    sp(0.5)
}
fn momentum() -> Spanned<f64> {
    sp(0.9)
}
fn betas() -> Spanned<(f64, f64)> {
    sp((0.9, 0.999))
}
fn one() -> Spanned<u32> {
    sp(1)
}
fn one_u32() -> u32 {
    1
}
fn sixty_four() -> Spanned<u32> {
    sp(64)
}
fn three() -> Spanned<u32> {
    sp(3)
}
fn five() -> u32 {
    5
}
fn five_spanned() -> Spanned<u32> {
    sp(5)
}
fn twenty_spanned() -> Spanned<u32> {
    sp(20)
}
fn ten() -> Spanned<u32> {
    sp(10)
}
fn thirty() -> u32 {
    30
}
fn reinforce_lr() -> Spanned<f64> {
    sp(0.01)
}
fn mnas_w() -> Spanned<f64> {
    sp(-0.07)
}
fn four_fifths() -> Spanned<f64> {
    sp(0.8)
}
fn cifar10_val() -> Spanned<String> {
    sp("cifar10-val".into())
}
fn cifar10_test() -> Spanned<String> {
    sp("cifar10-test".into())
}
fn four() -> Spanned<u32> {
    sp(4)
}
fn fifteen() -> Spanned<u32> {
    sp(15)
}
fn tau_max() -> Spanned<f64> {
    sp(10.0)
}
fn tau_min() -> Spanned<f64> {
    sp(0.1)
}
fn opset() -> Spanned<u32> {
    sp(21)
}
fn yes() -> bool {
    true
}
fn thousand() -> Spanned<u32> {
    sp(1000)
}
fn max_abs_diff() -> Spanned<f64> {
    sp(1e-4)
}
fn agreement() -> Spanned<f64> {
    sp(0.999)
}
fn batch_sizes() -> Spanned<Vec<u32>> {
    sp(vec![1, 32])
}
fn threads() -> Spanned<Vec<u32>> {
    sp(vec![1])
}
fn twenty() -> u32 {
    20
}
fn two_hundred() -> Spanned<u32> {
    sp(200)
}
