//! The cells of the host engine, each a forward step that keeps what its backward step
//! needs and that backward step, side by side; PyTorch's equations (as `cell.rs` writes
//! them for autodiff). Every function works on `n` rows of one step: `gates` is
//! `[n, G*H]` in PyTorch's gate order, the states `[n, H]`.
//!
//! Before `forward`, `gates` holds the pre-activations `x W_ih^T + b_ih`, plus
//! `h_{t-1} W_hh^T + b_hh` for RNN and LSTM; the GRU gets that second part as `gh`
//! because its `n` gate resets it. `forward` leaves the activated gates in `gates`.
//! `backward` turns the gradient `dh` reaching `h_t` (and `dc`, reaching `c_t` from the
//! step after) into `dg`, the gradient at the pre-activations `x W_ih^T + b_ih`, written
//! over the activated gates it no longer needs (one `[T*n, G*H]` buffer less), and `dgh`
//! at `h W_hh^T + b_hh` (the same as `dg` except for the GRU), and writes into `dh_prev`
//! the part of the gradient reaching `h_{t-1}` that is not `dgh W_hh` (GRU: `dh * z`).

use super::Real;

/// Which recurrence the kernel runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    /// `h_t = act(x W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)`, act = tanh or relu.
    Rnn {
        relu: bool,
    },
    Gru,
    Lstm,
}

/// The state and saved values of one step for `n` rows, `[n, H]` each.
pub struct Step<'a, T> {
    pub h_prev: &'a [T],
    pub c_prev: &'a [T],
    pub h: &'a mut [T],
    pub c: &'a mut [T],
    /// GRU: `h_{t-1} W_hn^T + b_hn`; empty for the others.
    pub extra: &'a mut [T],
}

/// The same, read-only, for the backward step.
pub struct Saved<'a, T> {
    pub h_prev: &'a [T],
    pub c_prev: &'a [T],
    pub h: &'a [T],
    pub c: &'a [T],
    pub extra: &'a [T],
}

/// Gradients of one backward step (`[n, H]` or `[n, G*H]`).
pub struct Grads<'a, T> {
    pub dh: &'a [T],
    /// In: `dL/dc_t` from the step after; out: `dL/dc_{t-1}`. Empty but for the LSTM.
    pub dc: &'a mut [T],
    /// The GRU's own `dgh`; empty for the others (their `dgh` is `dg`).
    pub dgh: &'a mut [T],
    pub dh_prev: &'a mut [T],
}

impl Cell {
    pub fn gates(self) -> usize {
        match self {
            Self::Rnn { .. } => 1,
            Self::Gru => 3,
            Self::Lstm => 4,
        }
    }

    /// Whether `h_{t-1} W_hh^T + b_hh` stays apart from `gates` (the GRU's reset).
    pub fn separate_hidden_gates(self) -> bool {
        self == Self::Gru
    }

    pub fn has_cell_state(self) -> bool {
        self == Self::Lstm
    }

    /// Whether the step keeps an `extra` `[n, H]`. Not the LSTM: its backward step
    /// computes `tanh(c_t)` again (the same value: the same function of the same `c_t`)
    /// rather than keep a `[T*n, H]` buffer a layer for it.
    pub fn has_extra(self) -> bool {
        self == Self::Gru
    }

    pub fn forward<T: Real>(self, hs: usize, gates: &mut [T], gh: &[T], s: Step<T>) {
        match self {
            Self::Rnn { relu } => rnn_forward(relu, gates, s),
            Self::Gru => gru_forward(hs, gates, gh, s),
            Self::Lstm => lstm_forward(hs, gates, s),
        }
    }

    /// `gates`: in, the activated gates `forward` left; out, `dg`.
    pub fn backward<T: Real>(self, hs: usize, gates: &mut [T], s: Saved<T>, g: Grads<T>) {
        match self {
            Self::Rnn { relu } => rnn_backward(relu, gates, s, g),
            Self::Gru => gru_backward(hs, gates, s, g),
            Self::Lstm => lstm_backward(hs, gates, s, g),
        }
    }
}

// h_t = tanh(a_t) (or relu), a_t the summed pre-activations.
fn rnn_forward<T: Real>(relu: bool, a: &mut [T], s: Step<T>) {
    rnn_forward_row(relu, s.h, a);
}

widest! {
    fn rnn_forward_row(relu: bool, h: &mut [T], a: &[T]) {
        for (h, &a) in h.iter_mut().zip(a) {
            *h = if relu { a.max0() } else { a.tanh() };
        }
    }
}

// da_t = dh_t * (1 - h_t^2) (relu: * [h_t > 0]).
fn rnn_backward<T: Real>(relu: bool, da: &mut [T], s: Saved<T>, g: Grads<T>) {
    for ((da, &dh), &h) in da.iter_mut().zip(g.dh).zip(s.h) {
        let slope = match relu {
            true if h > T::ZERO => T::ONE,
            true => T::ZERO,
            false => T::ONE - h * h,
        };
        *da = dh * slope;
    }
    g.dh_prev.fill(T::ZERO);
}

// r = σ(i_r + h_r), z = σ(i_z + h_z), n = tanh(i_n + r * h_n), h_t = (1 - z) * n + z * h_{t-1}
fn gru_forward<T: Real>(hs: usize, gates: &mut [T], gh: &[T], s: Step<T>) {
    let rows = gates.chunks_exact_mut(3 * hs).zip(gh.chunks_exact(3 * hs));
    let states = s.h.chunks_exact_mut(hs).zip(s.h_prev.chunks_exact(hs));
    for ((gates, gh), ((h, h_prev), h_n)) in rows.zip(states.zip(s.extra.chunks_exact_mut(hs))) {
        let (r, rest) = gates.split_at_mut(hs);
        let (z, n) = rest.split_at_mut(hs);
        let (gh_r, gh_z, gh_n) = (&gh[..hs], &gh[hs..2 * hs], &gh[2 * hs..3 * hs]);
        gru_forward_row([r, z, n, h, h_n], [gh_r, gh_z, gh_n, h_prev]);
    }
}

widest! {
    /// One row of `gru_forward` (split from one buffer in the caller, the slices would
    /// not be known apart and the loop would not vectorise).
    fn gru_forward_row(out: [&mut [T]; 5], inp: [&[T]; 4]) {
        let hs = out[0].len();
        let [r, z, n, h, h_n] = out.map(|x| &mut x[..hs]);
        let [gh_r, gh_z, gh_n, h_prev] = inp.map(|x| &x[..hs]);
        for j in 0..hs {
            r[j] = (r[j] + gh_r[j]).sigmoid();
            z[j] = (z[j] + gh_z[j]).sigmoid();
            h_n[j] = gh_n[j];
            n[j] = (n[j] + r[j] * gh_n[j]).tanh();
            h[j] = n[j] - z[j] * n[j] + z[j] * h_prev[j];
        }
    }
}

// dn = dh (1 - z), dz = dh (h_{t-1} - n), dh_{t-1} gets dh z directly;
// da_n = dn (1 - n^2), da_r = da_n h_n r (1 - r), da_z = dz z (1 - z);
// dg = [da_r, da_z, da_n], dgh = [da_r, da_z, da_n r].
fn gru_backward<T: Real>(hs: usize, gates: &mut [T], s: Saved<T>, g: Grads<T>) {
    let rows = gates.chunks_exact_mut(3 * hs).zip(s.extra.chunks_exact(hs));
    let states = g.dh.chunks_exact(hs).zip(s.h_prev.chunks_exact(hs));
    for (((gates, h_n), dgh), ((dh, h_prev), dh_prev)) in rows
        .zip(g.dgh.chunks_exact_mut(3 * hs))
        .zip(states.zip(g.dh_prev.chunks_exact_mut(hs)))
    {
        let (r, rest) = gates.split_at_mut(hs);
        let (z, n) = rest.split_at_mut(hs);
        let (dh_r, rest) = dgh.split_at_mut(hs);
        let (dh_z, dh_n) = rest.split_at_mut(hs);
        gru_backward_row([r, z, n, dh_r, dh_z, dh_n, dh_prev], [h_n, dh, h_prev]);
    }
}

widest! {
    /// `r`, `z`, `n` in; `da_r`, `da_z`, `da_n` out, in their places.
    fn gru_backward_row(out: [&mut [T]; 7], inp: [&[T]; 3]) {
        let hs = out[0].len();
        let [r, z, n, dh_r, dh_z, dh_n, dh_prev] = out.map(|x| &mut x[..hs]);
        let [h_n, dh, h_prev] = inp.map(|x| &x[..hs]);
        for j in 0..hs {
            let (r_j, z_j, n_j) = (r[j], z[j], n[j]);
            let dn = dh[j] * (T::ONE - z_j);
            let dz = dh[j] * (h_prev[j] - n_j);
            dh_prev[j] = dh[j] * z_j;
            let da_n = dn * (T::ONE - n_j * n_j);
            let da_r = da_n * h_n[j] * r_j * (T::ONE - r_j);
            let da_z = dz * z_j * (T::ONE - z_j);
            (r[j], z[j], n[j]) = (da_r, da_z, da_n);
            (dh_r[j], dh_z[j], dh_n[j]) = (da_r, da_z, da_n * r_j);
        }
    }
}

// i, f, o = σ(.), g = tanh(.);  c_t = f_t * c_{t-1} + i_t * g_t,  h_t = o_t * tanh(c_t)
fn lstm_forward<T: Real>(hs: usize, gates: &mut [T], s: Step<T>) {
    let rows = gates.chunks_exact_mut(4 * hs);
    let states = s.c.chunks_exact_mut(hs).zip(s.c_prev.chunks_exact(hs));
    for (gates, ((c, c_prev), h)) in rows.zip(states.zip(s.h.chunks_exact_mut(hs))) {
        let (i, rest) = gates.split_at_mut(hs);
        let (f, rest) = rest.split_at_mut(hs);
        let (g, o) = rest.split_at_mut(hs);
        lstm_forward_row([i, f, g, o, c, h], [c_prev]);
    }
}

widest! {
    fn lstm_forward_row(out: [&mut [T]; 6], inp: [&[T]; 1]) {
        let hs = out[0].len();
        let [i, f, g, o, c, h] = out.map(|x| &mut x[..hs]);
        let c_prev = &inp[0][..hs];
        for j in 0..hs {
            i[j] = i[j].sigmoid();
            f[j] = f[j].sigmoid();
            g[j] = g[j].tanh();
            o[j] = o[j].sigmoid();
            c[j] = f[j] * c_prev[j] + i[j] * g[j];
            h[j] = o[j] * c[j].tanh();
        }
    }
}

// do = dh tanh(c_t), dc_t += dh o (1 - tanh^2 c_t); di = dc g, df = dc c_{t-1}, dg = dc i,
// dc_{t-1} = dc f; then through each gate's activation.
fn lstm_backward<T: Real>(hs: usize, gates: &mut [T], s: Saved<T>, g: Grads<T>) {
    let rows = gates.chunks_exact_mut(4 * hs).zip(s.c.chunks_exact(hs));
    let states = g.dc.chunks_exact_mut(hs).zip(s.c_prev.chunks_exact(hs));
    for ((gates, c), (dh, (dc, c_prev))) in rows.zip(g.dh.chunks_exact(hs).zip(states)) {
        let (i, rest) = gates.split_at_mut(hs);
        let (f, rest) = rest.split_at_mut(hs);
        let (gg, o) = rest.split_at_mut(hs);
        lstm_backward_row([i, f, gg, o, dc], [c, dh, c_prev]);
    }
    g.dh_prev.fill(T::ZERO);
}

widest! {
    /// `i`, `f`, `g`, `o` in; `da_i`, `da_f`, `da_g`, `da_o` out, in their places.
    fn lstm_backward_row(out: [&mut [T]; 5], inp: [&[T]; 3]) {
        let hs = out[0].len();
        let [i, f, g, o, dc] = out.map(|x| &mut x[..hs]);
        let [c, dh, c_prev] = inp.map(|x| &x[..hs]);
        for j in 0..hs {
            let (i_j, f_j, g_j, o_j, tc) = (i[j], f[j], g[j], o[j], c[j].tanh());
            let d_o = dh[j] * tc;
            let d_c = dc[j] + dh[j] * o_j * (T::ONE - tc * tc);
            let (d_i, d_f, d_g) = (d_c * g_j, d_c * c_prev[j], d_c * i_j);
            dc[j] = d_c * f_j;
            i[j] = d_i * i_j * (T::ONE - i_j);
            f[j] = d_f * f_j * (T::ONE - f_j);
            g[j] = d_g * (T::ONE - g_j * g_j);
            o[j] = d_o * o_j * (T::ONE - o_j);
        }
    }
}
