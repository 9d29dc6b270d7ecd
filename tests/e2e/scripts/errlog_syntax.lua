-- test_e2e_errors.py: a script that does not compile
local x = 1
print(x y)
