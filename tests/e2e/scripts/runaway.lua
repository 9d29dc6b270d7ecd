-- test_e2e_limits.py: stopped by the instruction budget (max_instructions)
while true do end
