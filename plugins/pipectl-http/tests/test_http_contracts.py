"""The ``http`` extractor against pipectl's extractor contract (``pipectl.testing``), on the
test API server of conftest.py: plain and paginated, and incremental."""

from __future__ import annotations

from pipectl.testing import check_extractor_contract

from pipectl_http import plugin

from pipectl_http_testapi import N_RECORDS, make_record


def test_http_extractor_meets_the_extractor_contract(api):
    check_extractor_contract(
        lambda **options: plugin.make_http_extractor(url=api.url("/list"), **options),
        [make_record(i) for i in range(N_RECORDS)],
    )


def test_paginated_incremental_http_extractor_meets_the_extractor_contract(api):
    def append():
        new = [make_record(i) for i in range(N_RECORDS, N_RECORDS + 5)]
        api.records.extend(new)
        return new

    check_extractor_contract(
        lambda **options: plugin.make_http_extractor(
            url=api.url("/pages"),
            paginate="page",
            records_path="data",
            page_size_param="per_page",
            page_size=50,
            incremental={"param": "updated_since", "field": "updated_at"},
            **options,
        ),
        [make_record(i) for i in range(N_RECORDS)],
        append=append,
    )
