"""Test support: free ports, a real `callkeeper serve` process, raw SIP clients."""
