"""Installations hold their targets weakly (issue 11, defect 17): a session or client the application
drops is garbage-collected even without ``uninstall()``."""

from __future__ import annotations

import gc
import weakref

import botocore.session

import bedrock_hooks
from conftest import CREDS, converse, make_client, new_session


def _collected(ref: weakref.ref) -> bool:
    gc.collect()
    return ref() is None


def test_a_dropped_boto3_session_is_collected_without_uninstall(server, fake_time):
    session = new_session()
    installation = bedrock_hooks.install(session, runtime=fake_time.runtime())
    client = make_client(session, server)
    converse(client)
    refs = [weakref.ref(session), weakref.ref(session._session), weakref.ref(client)]
    del session, client
    assert all(_collected(ref) for ref in refs), "an installation kept a dropped session or client alive"
    assert installation.target is None and installation.clients == []
    assert bedrock_hooks.installation_for(make_client(new_session(), server)) is None


def test_a_dropped_client_is_collected_and_its_installation_stays_harmless(server, fake_time):
    client = make_client(new_session(), server)
    installation = bedrock_hooks.install(client, runtime=fake_time.runtime())
    ref = weakref.ref(client)
    del client
    assert _collected(ref)
    assert installation.target is None
    installation.uninstall()  # nothing left to undo: still fine


def test_a_botocore_session_dropped_under_install_everywhere_is_collected(server, fake_time):
    bedrock_hooks.install(runtime=fake_time.runtime())
    session = botocore.session.get_session()
    session.set_credentials(CREDS["aws_access_key_id"], CREDS["aws_secret_access_key"])
    client = session.create_client("bedrock-runtime", region_name="us-east-1", endpoint_url=server.url)
    converse(client)
    refs = [weakref.ref(session), weakref.ref(client)]
    del session, client
    assert all(_collected(ref) for ref in refs)
