local function explode()
    error("boom from e2e")
end
explode()
