"""The engines: the contract every engine passes (test_contract.py), and the CosyVoice engine on the lane's tiny
model (test_cosyvoice*.py)."""
