# backend/tests/test_supabase_client.py
from services.supabase_client import get_supabase_client

def test_supabase_client_initialization():
    client = get_supabase_client()
    assert client is not None
