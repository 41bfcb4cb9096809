"""The exact window model in CP-SAT.

Per request ``i`` and step ``k``: ``X[i][k]`` computed tokens after step ``k`` (monotone; the
step's tokens are ``X[i][k] - X[i][k-1]``), and booleans ``z`` (scheduled), ``D`` (prompt done,
``X >= P``), ``F`` (finished, ``X >= final``), ``vis`` (arrived by the step's start time,
reified both ways on the time variable). Every rule of the step problem is stated on these for
each step (budget, slots, phase and chunk bounds, the priority rules of the mode, KV blocks);
the step latency uses the same integer-ns floor encoding as the one-step model
(:func:`stepopt.formulation.cpsat._term`), and ``t[k] = t[k-1] + L[k]`` for a non-empty
batch, the next arrival for an empty one. A request meets its SLOs (``met[i]``) only if its
first token comes by its deadline and, while it has emitted and is not finished, the time
since its last token never exceeds the TBT bound at any step's end.

Arguments that hold for every plan (``horizon/bounds.py``) tighten it: requests no plan can
meet, clock and progress ceilings as domains, pairs of requests no plan meets both, and
implied constraints (:func:`_redundant`); docs/horizon.md says why each is valid.

The lexicographic objective is solved in three phases (SLOs met, then tokens, then busy
time), each phase fixing the previous optimum. Prefill attention (``alpha * c * C``) is a
product of two decisions with a float coefficient: this model does not encode it and refuses
a latency model that has it (docs/horizon.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ortools.sat.python import cp_model

from stepopt.errors import InputError
from stepopt.formulation.cpsat import _term_hull
from stepopt.formulation.spec import curve_term
from stepopt.horizon.bounds import (
    hopeless,
    latency_ceiling,
    prefill_cap,
    tbt_conflicts,
    work_clock_ceiling,
)
from stepopt.horizon.problem import NS_PER_S, WindowProblem


def check_supported(w: WindowProblem) -> None:
    p = w.latency.prefill
    if not p.is_zero:
        raise InputError(
            "latency_model.prefill_attention",
            f"the exact window model does not encode prefill attention (alpha_ns={p.alpha_ns}, "
            f"beta_ns={p.beta_ns}, linear_ns={p.linear_ns}); use a model without it "
            "(stepopt horizon windows drops it)",
            show_value=False,
        )


@dataclass
class WindowModel:
    m: cp_model.CpModel
    X: list[list]  # [i][k], k = 0..K (k = 0: the start constant)
    z: list[list]
    met: list
    busy: list
    slo_obj: cp_model.LinearExprT
    tokens_obj: cp_model.LinearExprT
    hopeless: dict[str, str] = field(default_factory=dict)  # id -> why no plan meets its SLOs
    hints: dict = field(default_factory=dict)


def build(w: WindowProblem) -> WindowModel:
    """The variables and constraints of the window (no objective)."""
    # long: the per-step rules share a dozen per-step variables (read
    # top-down); the per-request rules are in _request_vars, priority in _priority, SLOs in _slo.
    check_supported(w)
    m = cp_model.CpModel()
    cfg, lat, K = w.config, w.latency, w.steps
    reqs = w.requests
    n = len(reqs)
    B, N, thr, mc, bs = (
        cfg.max_num_scheduled_tokens,
        cfg.max_num_running_reqs,
        cfg.long_prefill_token_threshold,
        cfg.min_prefill_chunk,
        cfg.block_size,
    )
    mchunk = min(mc, thr) if thr > 0 else mc
    tok_term = curve_term("tokens", lat.tokens, 0, B)
    bat_term = curve_term("batch", lat.batch, 0, max(n, 1))
    ctx_max = sum(r.final_computed for r in reqs)
    dps = lat.decode_context_ps
    lmax = latency_ceiling(w)
    lmin = min(0, tok_term.ylo + bat_term.ylo)
    if lmin < 0:
        raise InputError("latency_model", "a step latency can be negative", lmin)
    futures = sorted({r.arrival_ns for r in reqs if r.arrival_ns > w.start_ns})
    t_hi = max([w.start_ns, *futures]) + K * lmax
    clock, ceilings = work_clock_ceiling(w)  # tighter domains (bounds.py)
    t = [m.new_constant(w.start_ns)] + [
        m.new_int_var(w.start_ns, clock[k], f"t{k}") for k in range(1, K + 1)
    ]
    for k in range(1, K + 1):
        m.add(t[k] >= t[k - 1])

    # seen[j][k]: future arrival j happened by the start of step k (t[k-1]); monotone in k.
    seen: list[list] = []
    for u in futures:
        row = [None]
        for k in range(1, K + 1):
            s = m.new_bool_var("")
            m.add(t[k - 1] >= u).only_enforce_if(s)
            m.add(t[k - 1] <= u - 1).only_enforce_if(~s)
            if k > 1:
                m.add_implication(row[k - 1], s)
            row.append(s)
        seen.append(row)
    fidx = {u: j for j, u in enumerate(futures)}
    one = m.new_bool_var("one")
    zero = m.new_bool_var("zero")
    m.add(one == 1)
    m.add(zero == 0)

    X, z, D, F, adm, vis = ([] for _ in range(6))
    for r in reqs:
        ub = ceilings[len(X)]
        xs, zs, ds, fs, ads, vs = _request_vars(m, w, r, seen, fidx, one, zero, mchunk, ub)
        X.append(xs)
        z.append(zs)
        D.append(ds)
        F.append(fs)
        adm.append(ads)
        vis.append(vs)

    order = sorted(
        range(n), key=lambda i: (reqs[i].priority, reqs[i].arrival_ns / NS_PER_S, reqs[i].id)
    )
    busy: list = []
    e_prev, last_prev = None, []
    for k in range(1, K + 1):
        cks = [X[i][k] - X[i][k - 1] for i in range(n)]
        S = m.new_int_var(0, B, "")
        m.add(sum(cks) == S)
        b = m.new_int_var(0, n, "")
        m.add(b == sum(z[i][k] for i in range(n)))
        # slots: admitted and not finished before this step
        runs = []
        for i in range(n):
            rk = m.new_bool_var("")
            m.add(rk >= adm[i][k] - F[i][k - 1])
            runs.append(rk)
        m.add(sum(runs) <= N)
        if w.kv_total is not None:
            blks = []
            for i in range(n):
                top = -(-reqs[i].final_computed // bs)
                bk = m.new_int_var(0, top, "")
                m.add(bs * bk >= X[i][k]).only_enforce_if(~F[i][k - 1])
                blks.append(bk)
            m.add(sum(blks) <= w.kv_total)
        _priority(m, w, order, k, X, z, D, F, adm, vis)
        # latency
        ctx_terms = []
        for i in range(n):
            if reqs[i].final_computed < reqs[i].prompt_tokens or dps == 0:
                continue
            v = m.new_int_var(0, reqs[i].final_computed, "")
            zd = m.new_bool_var("")
            m.add_bool_and([z[i][k], D[i][k - 1]]).only_enforce_if(zd)
            m.add_bool_or([~z[i][k], ~D[i][k - 1]]).only_enforce_if(~zd)
            m.add(v == X[i][k - 1]).only_enforce_if(zd)
            m.add(v == 0).only_enforce_if(~zd)
            ctx_terms.append(v)
        L = _term_hull(m, tok_term, S, None) + _term_hull(m, bat_term, b, None)
        if ctx_terms:
            y = m.new_int_var(0, max(0, dps * ctx_max // 1000), "")
            m.add_linear_constraint(dps * sum(ctx_terms) - 1000 * y, 0, 999)
            L = L + y
        e = m.new_bool_var("")
        m.add(b >= 1).only_enforce_if(e)
        m.add(b == 0).only_enforce_if(~e)
        bk = m.new_int_var(0, lmax, "")
        m.add(bk == L).only_enforce_if(e)
        m.add(bk == 0).only_enforce_if(~e)
        busy.append(bk)
        m.add(t[k] == t[k - 1] + L).only_enforce_if(e)
        # an empty batch waits for the next arrival (or for nothing, when none is left)
        for j, u in enumerate(futures):
            prev = [seen[j - 1][k]] if j > 0 else []
            m.add(t[k] == u).only_enforce_if([~e, *prev, ~seen[j][k]])
        last = [seen[-1][k]] if futures else []
        m.add(t[k] == t[k - 1]).only_enforce_if([~e, *last])
        # symmetry: a step that changes nothing (empty, no arrival left to wait for) can be
        # moved to the end of the window without changing any time or state
        if k > 1:
            m.add_bool_or([e_prev, *[~x for x in last_prev], ~e])
        e_prev, last_prev = e, last

    met = _slo(m, w, t, X, z, D, F, t_hi)
    _redundant(m, w, t, X, z, D, vis, met)
    pairs, capped, h = tbt_conflicts(w)
    for i, j in pairs:
        m.add_bool_or([~met[i], ~met[j]])
    for i, hi in h.items():
        for k in range(1, hi + 1):
            m.add(t[k] <= capped[k]).only_enforce_if(met[i])
    # the per-request relaxation (horizon/bounds.py): SLOs no plan can meet
    out = hopeless(w)
    for i, r in enumerate(reqs):
        if r.id in out:
            m.add(met[i] == 0)
    weights = w.slo_weight
    slo_obj = sum(weights[r.id] * met[i] for i, r in enumerate(reqs))
    tokens_obj = sum(X[i][K] for i in range(n)) - sum(r.computed_tokens for r in reqs)
    return WindowModel(m, X, z, met, busy, slo_obj, tokens_obj, out)


def _request_vars(m, w: WindowProblem, r, seen, fidx, one, zero, mchunk: int, ub) -> tuple:
    """One request's progress over the window, its phase booleans and its step rules."""
    K, thr = w.steps, w.config.long_prefill_token_threshold
    P, C0, Fin = r.prompt_tokens, r.computed_tokens, r.final_computed
    xs = [m.new_constant(C0)] + [m.new_int_var(C0, ub[k], "") for k in range(1, K + 1)]
    zs, ds, fs, ads, vs = [None], [one if C0 >= P else zero], [zero], [], []
    ads.append(one if r.running else zero)
    vs.append(None)
    for k in range(1, K + 1):
        m.add(xs[k] >= xs[k - 1])
        zk = m.new_bool_var("")
        m.add(xs[k] >= xs[k - 1] + 1).only_enforce_if(zk)
        m.add(xs[k] == xs[k - 1]).only_enforce_if(~zk)
        dk = one if C0 >= P else m.new_bool_var("")
        if C0 < P:
            m.add(xs[k] >= P).only_enforce_if(dk)
            m.add(xs[k] <= P - 1).only_enforce_if(~dk)
            m.add_implication(ds[k - 1], dk)
        fk = m.new_bool_var("")
        m.add(xs[k] >= Fin).only_enforce_if(fk)
        m.add(xs[k] <= Fin - 1).only_enforce_if(~fk)
        m.add_implication(fs[k - 1], fk)
        m.add_implication(fs[k - 1], ~zk)
        if r.running:
            ak = one
        elif C0 == 0:
            ak = m.new_bool_var("")
            m.add(xs[k] >= 1).only_enforce_if(ak)
            m.add(xs[k] <= 0).only_enforce_if(~ak)
        else:
            raise InputError(f"requests[{r.id}].computed_tokens", "must be 0 unless running", C0)
        # phase: a decode takes 1 token; a prefill at most its prompt, its threshold, and
        # at least the minimum chunk unless it completes the prompt.
        m.add(xs[k] <= xs[k - 1] + 1).only_enforce_if(ds[k - 1])
        if C0 < P:
            m.add(xs[k] <= P).only_enforce_if(~ds[k - 1])
            if thr > 0:
                m.add(xs[k] - xs[k - 1] <= thr).only_enforce_if(~ds[k - 1])
            m.add(xs[k] - xs[k - 1] >= mchunk).only_enforce_if([zk, ~ds[k - 1], ~dk])
        if r.running or r.arrival_ns <= w.start_ns:
            vk = one
        else:
            vk = seen[fidx[r.arrival_ns]][k]
            m.add_implication(zk, vk)
        zs.append(zk)
        ds.append(dk)
        fs.append(fk)
        ads.append(ak)
        vs.append(vk)
    return xs, zs, ds, fs, ads, vs


def _priority(m, w, order, k, X, z, D, F, adm, vis) -> None:
    """Decode > prefill in both modes; strict mode adds running > waiting and the waiting
    order (a prefix of (priority, arrival, id) among the requests waiting at this step)."""
    n = len(w.requests)
    thr = w.config.long_prefill_token_threshold
    anypre = m.new_bool_var("")
    for j in range(n):
        if w.requests[j].computed_tokens < w.requests[j].prompt_tokens:
            m.add_bool_or([~z[j][k], D[j][k - 1], anypre])
    for i in range(n):
        m.add_bool_or([~anypre, ~D[i][k - 1], F[i][k - 1], z[i][k]])
    if w.priority_mode != "strict":
        return
    anyadm = m.new_bool_var("")
    newadm = []
    for j in range(n):
        if w.requests[j].running:
            newadm.append(None)
            continue
        na = m.new_bool_var("")
        m.add_bool_or([~z[j][k], adm[j][k - 1], na])
        m.add_implication(na, anyadm)
        newadm.append(na)
    for i in range(n):
        m.add_bool_or([~anyadm, ~adm[i][k - 1], F[i][k - 1], z[i][k]])
        if thr > 0:
            m.add(X[i][k] - X[i][k - 1] >= thr).only_enforce_if([anyadm, adm[i][k - 1], ~D[i][k]])
        else:
            m.add_bool_or([~anyadm, ~adm[i][k - 1], D[i][k]])
    for a_pos, i in enumerate(order):
        if w.requests[i].running:
            continue
        for j in order[a_pos + 1 :]:
            if newadm[j] is None:
                continue
            m.add_bool_or([~newadm[j], ~vis[i][k], adm[i][k - 1], z[i][k]])


def _slo(m, w, t, X, z, D, F, t_hi) -> list:
    K = w.steps
    tbt = w.tbt_ns
    met = []
    for i, r in enumerate(w.requests):
        mi = m.new_bool_var(f"met_{i}")
        met.append(mi)
        if r.emitted_tokens == 0:
            m.add_implication(mi, D[i][K])
            dl = r.arrival_ns + w.ttft_ns(r)
            for k in range(1, K + 1):
                if r.computed_tokens < r.prompt_tokens:
                    m.add(t[k] <= dl).only_enforce_if([mi, D[i][k], ~D[i][k - 1]])
        lo = min(r.arrival_ns, w.start_ns, r.last_token_ns or w.start_ns)
        lt = [m.new_constant(r.last_token_ns if r.emitted_tokens > 0 else w.start_ns)]
        for k in range(1, K + 1):
            em = m.new_bool_var("")
            m.add_bool_and([z[i][k], D[i][k]]).only_enforce_if(em)
            m.add_bool_or([~z[i][k], ~D[i][k]]).only_enforce_if(~em)
            lk = m.new_int_var(lo, t_hi, "")
            m.add(lk == t[k]).only_enforce_if(em)
            m.add(lk == lt[k - 1]).only_enforce_if(~em)
            had = [] if r.emitted_tokens > 0 else [D[i][k - 1]]
            m.add(t[k] - lt[k - 1] <= tbt).only_enforce_if([mi, *had, ~F[i][k - 1]])
            # implied (lt[k-1] <= t[k-1]): no step of its open stretch lasts longer than tbt
            m.add(t[k] - t[k - 1] <= tbt).only_enforce_if([mi, *had, ~F[i][k - 1]])
            lt.append(lk)
    return met


def _redundant(m, w: WindowProblem, t, X, z, D, vis, met) -> None:
    """Implied constraints that let the search see deadlines and the window's end sooner: a
    step's tokens are 0 unless scheduled; a request that meets its SLOs has its prompt done
    by any step ending after its deadline, and is visible early enough to finish its prompt
    in the steps left (at most ``cap`` tokens a step)."""
    K, cap = w.steps, prefill_cap(w)
    for i, r in enumerate(w.requests):
        top = min(cap, r.final_computed - r.computed_tokens)
        for k in range(1, K + 1):
            m.add(X[i][k] - X[i][k - 1] <= max(top, 1) * z[i][k])
        rem = r.prompt_tokens - r.computed_tokens
        if r.emitted_tokens > 0 or rem <= 0 or cap <= 0:
            continue
        need = -(-rem // cap)
        if need > K:
            continue
        if vis[i][K - need + 1] is not None:
            m.add_implication(met[i], vis[i][K - need + 1])
        dl = r.arrival_ns + w.ttft_ns(r)
        for k in range(1, K):
            m.add(t[k] <= dl).only_enforce_if([met[i], ~D[i][k]])
