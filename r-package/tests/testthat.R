library(testthat)
library(hako)
test_check("hako")
