"""Readers of Vidur's profile files: good files parse, wrong shapes fail with one clear line."""

from __future__ import annotations

import pytest

from stepopt.errors import InputError
from stepopt.latency.readers import (
    TOKENWISE_OPS,
    read_all_reduce,
    read_attention,
    read_mlp,
)
from stepopt.testing.data import require_shared_data

MLP_SHAPE = ["n_head", "n_kv_head", "n_embd", "n_expanded_embd"]


def mlp_csv(path, rows, drop=()):
    cols = [f"time_stats.{op}.median" for op in TOKENWISE_OPS] + MLP_SHAPE
    cols += ["num_tokens", "num_tensor_parallel_workers"]
    cols = [c for c in cols if c not in drop]
    lines = [",".join(cols)]
    for tokens, tp, ms in rows:
        values = {f"time_stats.{op}.median": str(ms) for op in TOKENWISE_OPS}
        values.update(n_head="32", n_kv_head="8", n_embd="4096", n_expanded_embd="14336")
        values.update(num_tokens=str(tokens), num_tensor_parallel_workers=str(tp))
        lines.append(",".join(values[c] for c in cols))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_mlp_rows_become_samples_with_vidur_sum(tmp_path):
    path = mlp_csv(tmp_path / "mlp.csv", [(8, 1, 0.5), (16, 2, 0.25)])
    samples = read_mlp(path)
    assert [(s.num_tokens, s.tp) for s in samples] == [(8, 1), (16, 2)]
    assert samples[0].total_ms == pytest.approx(0.5 * len(TOKENWISE_OPS))
    assert (samples[0].n_kv_head, samples[0].n_embd) == (8, 4096)


def test_missing_column_names_file_and_column(tmp_path):
    path = mlp_csv(tmp_path / "mlp.csv", [(8, 1, 0.5)], drop=("num_tokens",))
    with pytest.raises(InputError) as err:
        read_mlp(path)
    text = str(err.value)
    assert str(path) in text and "'num_tokens'" in text and "\n" not in text


def test_bad_value_names_file_line_and_column(tmp_path):
    path = mlp_csv(tmp_path / "mlp.csv", [(8, 1, 0.5), (16, 1, 0.5)])
    text = path.read_text().splitlines()
    text[2] = text[2].replace("0.5", "fast", 1)
    path.write_text("\n".join(text) + "\n")
    with pytest.raises(InputError, match=r"mlp\.csv:3: column 'time_stats\.input_layernorm"):
        read_mlp(path)


def test_non_integer_token_count_rejected(tmp_path):
    path = mlp_csv(tmp_path / "mlp.csv", [(8, 1, 0.5)])
    path.write_text(path.read_text().replace(",8,1\n", ",8.5,1\n"))
    with pytest.raises(InputError, match=r"num_tokens.*integer"):
        read_mlp(path)


def test_wrong_kind_of_file(tmp_path):
    path = mlp_csv(tmp_path / "mlp.csv", [(8, 1, 0.5)])
    with pytest.raises(InputError, match=r"missing column 'time_stats\.attn_decode\.median'"):
        read_attention(path)
    with pytest.raises(InputError, match=r"all_reduce\.csv"):
        read_all_reduce(path)


def test_empty_and_absent_files(tmp_path):
    path = mlp_csv(tmp_path / "mlp.csv", [])
    with pytest.raises(InputError, match="no data rows"):
        read_mlp(path)
    with pytest.raises(InputError, match="no such"):
        read_mlp(tmp_path / "absent.csv")


def test_attention_rows_split_and_reshapes_added(tmp_path):
    head = (
        "time_stats.attn_input_reshape.median,time_stats.attn_decode.median,"
        "time_stats.attn_output_reshape.median,time_stats.attn_prefill.median,n_embd,n_q_head,"
        "n_kv_head,num_tensor_parallel_workers,batch_size,prefill_chunk_size,kv_cache_size,"
        "is_prefill"
    )
    path = tmp_path / "attention.csv"
    path.write_text(
        head
        + "\n0.0,0.010,0.002,,8192,64,8,2,4,0,512,False\n"
        + "0.0,,0.003,0.5,8192,64,8,2,1,256,128,True\n"
    )
    att = read_attention(path)
    (d,), (p,) = att.decode, att.prefill
    assert (d.batch_size, d.context, d.time_ms) == (4, 512, pytest.approx(0.012))
    assert (p.chunk, p.cached, p.time_ms) == (256, 128, pytest.approx(0.503))
    path.write_text(head + "\n0.0,,0.003,,8192,64,8,2,1,256,128,True\n")
    with pytest.raises(InputError, match=r"attention\.csv:2: column 'time_stats\.attn_prefill"):
        read_attention(path)
    path.write_text(head + "\n0.0,0.01,0.003,,8192,64,8,2,1,0,128,maybe\n")
    with pytest.raises(InputError, match="is_prefill"):
        read_attention(path)


def test_all_reduce_rows(tmp_path):
    path = tmp_path / "all_reduce.csv"
    path.write_text(
        ",time_stats.all_reduce.median,num_workers,size,devices_per_node\n"
        "0,0.05,2,2048,2\n1,-0.1,2,4096,2\n"
    )
    with pytest.raises(InputError, match=r":3: column 'time_stats\.all_reduce\.median'"):
        read_all_reduce(path)


@pytest.mark.data
def test_real_files_have_the_documented_shape():
    root = require_shared_data("vidur", "data", "profiling")
    mlp = read_mlp(root / "compute/a100/meta-llama/Meta-Llama-3-8B/mlp.csv")
    assert len(mlp) == 1824 and {s.tp for s in mlp} == {1, 2, 4, 8}
    assert max(s.num_tokens for s in mlp) == 32768
    att = read_attention(root / "a100/attention.csv")
    assert (len(att.decode), len(att.prefill)) == (10240, 4418)
    assert {s.batch_size for s in att.decode} == set(range(1, 129))
    ar = read_all_reduce(root / "network/h100_dgx/all_reduce.csv")
    assert {(s.num_workers, s.devices_per_node) for s in ar} == {(2, 2), (4, 4), (8, 8)}


def test_shared_data_dir_follows_the_environment(tmp_path, monkeypatch):
    from stepopt.testing.data import shared_data_dir

    monkeypatch.setenv("STEPOPT_SHARED_DATA", str(tmp_path))
    assert shared_data_dir() == tmp_path.resolve()
    monkeypatch.setenv("STEPOPT_SHARED_DATA", str(tmp_path / "absent"))
    assert shared_data_dir() is None  # a wrong override is not silently replaced


ATT_HEAD = (
    "time_stats.attn_decode.median,time_stats.attn_prefill.median,n_embd,n_q_head,n_kv_head,"
    "num_tensor_parallel_workers,batch_size,prefill_chunk_size,kv_cache_size,is_prefill"
)


@pytest.mark.parametrize(
    ("row", "match"),
    [
        # a prefill call profiled with a batch of 2: the predictor's samples are per request
        (",0.5,8192,64,8,2,2,256,128,True", r":2: column 'batch_size': prefill rows must have"),
        (",0.5,8192,64,8,2,1,,128,True", r"column 'prefill_chunk_size': empty value"),
        (",0.5,8192,64,8,2,1,x,128,True", r"column 'prefill_chunk_size': not a number"),
        (",0.5,8192,64,8,2,1,-4,128,True", r"prefill_chunk_size': expected a finite non-neg"),
        (",0.5,8192,64,8,2,1,inf,128,True", r"prefill_chunk_size': expected a finite non-neg"),
        (",0.5,8192,64,8,2,1,2.5,128,True", r"prefill_chunk_size': expected an integer"),
        ("0.1,,8192,64,8,2,1,0,128,yes", r"column 'is_prefill': expected True or False"),
    ],
)
def test_every_attention_reader_error_is_one_line(tmp_path, row, match):
    path = tmp_path / "attention.csv"
    path.write_text(f"{ATT_HEAD}\n{row}\n")
    with pytest.raises(InputError, match=match) as err:
        read_attention(path)
    assert "\n" not in str(err.value)


def test_a_directory_is_not_a_profile(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        read_all_reduce(tmp_path)
