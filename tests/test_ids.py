import uuid

from app.ids import new_token, new_uuid


def test_ids_are_distinct_random_uuids_across_pool_refills() -> None:
    ids = [new_uuid() for _ in range(1000)]  # 16 KB: the 4 KB pool refills several times
    assert len(set(ids)) == 1000
    assert all(uuid.UUID(i).version == 4 and str(uuid.UUID(i)) == i for i in ids)


def test_tokens_are_32_hex_digits_and_distinct() -> None:
    tokens = {new_token() for _ in range(1000)}
    assert len(tokens) == 1000
    assert all(len(t) == 32 and int(t, 16) >= 0 for t in tokens)
