from __future__ import annotations

import pytest

from monitor.errors import SettingsError
from monitor.settings import Secret, load_settings


def test_defaults_then_file_then_environment(tmp_path) -> None:
    f = tmp_path / "s.toml"
    f.write_text('[kafka]\nnews_topic = "from-file"\ngroup = "g-file"\n[monitor]\nbatch_size = 64\n')
    s = load_settings(
        f,
        env={
            "BEARWATCH_KAFKA_GROUP": "g-env",
            "BEARWATCH_ES_URL": "http://es:9200",
            "BEARWATCH_MONITOR_BATCH_SIZE": "8",
        },
    )
    assert s.kafka.news_topic == "from-file" and s.kafka.group == "g-env"
    assert s.elasticsearch.url == "http://es:9200" and s.monitor.batch_size == 8


def test_secrets_come_from_environment_or_files_and_never_print(tmp_path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("s3cr3t-from-file\n")
    s = load_settings(
        env={
            "BEARWATCH_ES_API_KEY_FILE": str(key_file),
            "BEARWATCH_KAFKA_SASL_PASSWORD": "hunter2",
            "BEARWATCH_KAFKA_SASL_USERNAME": "u",
        }
    )
    assert s.elasticsearch.api_key.reveal() == "s3cr3t-from-file"
    assert "s3cr3t" not in repr(s) and "hunter2" not in repr(s) and "hunter2" not in str(s.kafka)
    assert isinstance(s.kafka.sasl_password, Secret)


def test_secret_in_settings_file_is_refused(tmp_path) -> None:
    f = tmp_path / "s.toml"
    f.write_text('[elasticsearch]\napi_key = "oops"\n')
    with pytest.raises(SettingsError, match="secret"):
        load_settings(f, env={})


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[kafka]\nbogus = 1\n", "unknown setting"),
        ("[nope]\n", "unknown section"),
        ('[model]\ndevice = "tpu"\n', "device"),
        ("[detection]\nalpha = -5\n", "detection.alpha"),
        ("[detection]\nearly_check_minutes = 15\n", "early_check_minutes"),
        ("[detection]\nmin_confidence = 1.5\n", "min_confidence"),
        ('[kafka]\npartitions = "three"\n', r"kafka.partitions \(from .*\): must be a valid integer.*'three'"),
        ('[kafka]\ngroup_id = "g"\n', r"unknown setting\(s\) in \[kafka\]: group_id"),
        ("[retrieval]\nk = -5\n", "retrieval.k .*greater than or equal to 1"),
        ("[detection]\nalpha = -5\n", "detection.alpha .*greater than 0"),
        ("[metrics]\nport = 99999\n", "metrics.port .*less than or equal to 65535"),
        ('[elasticsearch]\nurl = "es:9200"\n', "elasticsearch.url"),
        ('[trainer]\nschedule = "every day"\n', "trainer.schedule 'every day'"),
        ('[trainer]\nschedule = "interval:6 hours"\n', "interval:<number>h"),
        ('[trainer]\ntimezone = "Mars/Olympus"\n', "not a time zone"),
        ('[trainer]\nnotify_slack = "yes"\n', "trainer.notify_slack"),
        ('[kafka]\nsecurity_protocol = "SASL_SSL"\n', "needs kafka.sasl_mechanism"),
        ("[monitor]\nretry_initial_seconds = 60\n", "retry_initial_seconds must not exceed"),
        ("kafka = 3\n", r"must be a \[kafka\] table"),
        ("[kafka\n", "not valid TOML"),
    ],
)
def test_bad_settings_are_explained(tmp_path, text: str, match: str) -> None:
    f = tmp_path / "s.toml"
    f.write_text(text)
    with pytest.raises(SettingsError, match=match):
        load_settings(f, env={})


def test_bad_environment_number() -> None:
    with pytest.raises(SettingsError, match=r"from BEARWATCH_MONITOR_BATCH_SIZE\): must be a valid integer.*'many'"):
        load_settings(env={"BEARWATCH_MONITOR_BATCH_SIZE": "many"})


def test_environment_strings_are_parsed_as_the_settings_types() -> None:
    s = load_settings(
        env={
            "BEARWATCH_KAFKA_CREATE_TOPICS": "false",
            "BEARWATCH_DETECTION_ALPHA": "3e-3",
            "BEARWATCH_KAFKA_PARTITIONS": "6",
        }
    )
    assert s.kafka.create_topics is False and s.detection.alpha == 3e-3 and s.kafka.partitions == 6
    with pytest.raises(SettingsError, match="BEARWATCH_KAFKA_CREATE_TOPICS.*valid boolean"):
        load_settings(env={"BEARWATCH_KAFKA_CREATE_TOPICS": "maybe"})


def test_bearwatch_config_names_the_file_when_no_path_is_given(tmp_path) -> None:
    f = tmp_path / "s.toml"
    f.write_text('[kafka]\nnews_topic = "from-config-variable"\n')
    assert load_settings(env={"BEARWATCH_CONFIG": str(f)}).kafka.news_topic == "from-config-variable"
    with pytest.raises(SettingsError, match="cannot read settings file .*missing.toml: No such file"):
        load_settings(env={"BEARWATCH_CONFIG": str(tmp_path / "missing.toml")})


def test_a_bad_value_given_in_code_is_refused_too() -> None:
    from dataclasses import replace

    from monitor.settings import KafkaSettings

    with pytest.raises(ValueError, match="partitions"):
        replace(KafkaSettings(), partitions=0)
    with pytest.raises(ValueError, match="group_id"):
        KafkaSettings(group_id="g")  # type: ignore[call-arg]


def test_the_documented_example_file_loads_with_the_defaults() -> None:
    from pathlib import Path

    from monitor.settings import Settings

    example = Path(__file__).resolve().parents[1] / "deploy" / "bearwatch.toml"
    assert load_settings(example, env={}) == Settings()


def test_detection_settings_reach_the_tracker() -> None:
    from datetime import timedelta

    from monitor.wiring import tracker_config

    default = tracker_config(load_settings(env={}))
    assert default.paged_memory == timedelta(hours=24) and default.min_confidence == 0.85
    off = tracker_config(load_settings(env={"BEARWATCH_DETECTION_PAGED_MEMORY_HOURS": "0"}))
    assert off.paged_memory is None
