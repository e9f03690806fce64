//! The recurrent state of every model: `h`, and `c` for an LSTM. Carrying, detaching
//! (truncated BPTT), resetting, the 8.7 truncation hook and generation all go through it.

use burn::tensor::{Device, Tensor};

/// The state of a whole model, `[layers * directions, batch, hidden]` per part.
#[derive(Debug, Clone)]
pub struct State {
    pub h: Tensor<3>,
    /// The LSTM's memory cell; `None` for the other cells.
    pub c: Option<Tensor<3>>,
}

/// The state of one direction of one layer, `[batch, hidden]` per part.
#[derive(Debug, Clone)]
pub struct CellState {
    pub h: Tensor<2>,
    pub c: Option<Tensor<2>>,
}

impl State {
    /// Zeros for `cells` layer-directions; with a memory cell when `with_c`.
    pub fn zeros(cells: usize, batch: usize, hidden: usize, with_c: bool, device: &Device) -> Self {
        let zeros = || Tensor::zeros([cells, batch, hidden], device);
        Self {
            h: zeros(),
            c: with_c.then(zeros),
        }
    }

    /// Cuts the graph behind the state (truncated BPTT between minibatches).
    pub fn detach(self) -> Self {
        self.map(Tensor::detach)
    }

    pub fn map(self, mut f: impl FnMut(Tensor<3>) -> Tensor<3>) -> Self {
        Self {
            h: f(self.h),
            c: self.c.map(f),
        }
    }

    /// `[batch, hidden]` of layer-direction `i`.
    pub fn cell(&self, i: usize) -> CellState {
        let [_, b, h] = self.h.dims();
        let pick = |t: &Tensor<3>| t.clone().narrow(0, i, 1).reshape([b, h]);
        CellState {
            h: pick(&self.h),
            c: self.c.as_ref().map(pick),
        }
    }

    /// The model state from each layer-direction's final state, in order.
    pub fn stack(cells: Vec<CellState>) -> Self {
        let with_c = cells.first().is_some_and(|s| s.c.is_some());
        let (hs, cs): (Vec<_>, Vec<_>) = cells
            .into_iter()
            .map(|s| (s.h.unsqueeze::<3>(), s.c.map(Tensor::unsqueeze::<3>)))
            .unzip();
        Self {
            h: Tensor::cat(hs, 0),
            c: with_c.then(|| Tensor::cat(cs.into_iter().flatten().collect(), 0)),
        }
    }

    pub fn batch_size(&self) -> usize {
        self.h.dims()[1]
    }
}

impl CellState {
    pub fn map(self, mut f: impl FnMut(Tensor<2>) -> Tensor<2>) -> Self {
        Self {
            h: f(self.h),
            c: self.c.map(f),
        }
    }
}
