"""Config rules beyond one key: a Maglev ring large enough for each VIP's backends, and a
file nested too deeply to read, each one clear ConfigError naming where."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from xlb.agent import settings
from xlb.dataplane.config import ConfigError, load_config, parse_config
from xlb.dataplane.maglev import is_prime, targets
from xlb.schema import RING_PER_BACKEND, ring_problem


def config(ring_size: int, backends: int, vips: int = 1) -> dict[str, Any]:
    return {"instance": {"name": "lb1", "interface": "eth0", "ring_size": ring_size},
            "vip": [{"name": f"v{v}", "address": f"10.100.0.{v + 1}", "port": 80,
                     "protocol": "tcp",
                     "backend": [{"address": f"10.0.{v}.{i + 1}"} for i in range(backends)]}
                    for v in range(vips)]}


def test_the_reported_case_is_refused_with_the_rule() -> None:
    """ring_size 13 and 20 backends: Maglev gives 7 of them no entry at all."""
    assert (targets([(f"10.0.0.{i}", 1) for i in range(20)], 13) == 0).sum() == 7
    with pytest.raises(ConfigError) as e:
        parse_config(config(13, 20))
    assert e.value.errors == [
        "vip[0].backend: 20 backends need instance.ring_size >= 2000 (Maglev: at least 100 "
        "ring entries per backend, or some get a skewed share or none at all), e.g. 2003; "
        "ring_size is 13"]


def test_the_rule_is_per_vip_and_exact_at_its_edge() -> None:
    assert RING_PER_BACKEND == 100
    parse_config(config(211, 2, vips=3))  # 3 VIPs of 2 backends: each fits in 211
    with pytest.raises(ConfigError) as e:
        parse_config(config(211, 3, vips=2))
    assert [err.split(":")[0] for err in e.value.errors] == ["vip[0].backend", "vip[1].backend"]
    assert ring_problem(300, 3) is None and ring_problem(299, 3) is not None
    parse_config(config(13, 0))  # an instance with an empty VIP needs no ring to speak of


def test_the_suggested_ring_size_is_a_prime_that_fits() -> None:
    for n in (1, 7, 20, 655, 656, 10485):
        problem = ring_problem(13, n)
        assert problem is not None
        suggested = int(problem.split("e.g. ")[1].split(";")[0])
        assert is_prime(suggested) and suggested >= 100 * n
        assert ring_problem(suggested, n) is None


def test_a_ring_problem_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "lb1.toml"
    backends = "".join(f'[[vip.backend]]\naddress = "10.0.1.{i}"\n' for i in range(1, 21))
    path.write_text('[instance]\nname = "lb1"\ninterface = "eth0"\nring_size = 13\n\n'
                    '[[vip]]\naddress = "10.100.0.10"\nport = 80\nprotocol = "tcp"\n'
                    + backends)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.errors[0].startswith(f"{path}: vip[0].backend: 20 backends need")


@pytest.mark.parametrize("nested", ["[" * 5000 + "]" * 5000, "{a = " * 5000 + "1" + "}" * 5000],
                         ids=["arrays", "inline-tables"])
def test_deeply_nested_toml_is_one_clear_error_with_the_path(tmp_path: Path,
                                                             nested: str) -> None:
    path = tmp_path / "deep.toml"
    path.write_text(f'[instance]\nname = "lb1"\ninterface = "eth0"\nx = {nested}\n')
    for load in (load_config, settings.load):
        with pytest.raises(ConfigError) as e:
            load(str(path))
        (err,) = e.value.errors
        assert err.startswith(f"{path}: TOML nested too deeply"), err
